"""What a run did, counted as it goes, and the closing report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Summary:
    total: int = 0
    described: int = 0
    skipped: int = 0
    """Already in the output folder from an earlier run: not sent."""
    failed: dict[Path, str] = field(default_factory=dict)
    retries: int = 0
    requests: int = 0
    aborted: str | None = None
    elapsed_s: float = 0.0

    @property
    def not_attempted(self) -> int:
        return self.total - self.described - self.skipped - len(self.failed)

    @property
    def exit_code(self) -> int:
        """0 when every image has its descriptor, 1 when some failed, 2 when the run stopped."""
        if self.aborted is not None:
            return 2
        return 1 if self.failed else 0

    def render(self) -> str:
        rate = self.described / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"described {self.described} of {self.total} images, {self.skipped} already done "
            f"(skipped), {len(self.failed)} failed; {self.requests} requests, "
            f"{self.retries} retries, {self.elapsed_s:.1f} s, {rate:.1f} images/s"
        ]
        lines += [f"failed: {path}: {reason}" for path, reason in self.failed.items()]
        if self.aborted is not None:
            lines.append(f"stopped, {self.not_attempted} images not sent: {self.aborted}")
        return "\n".join(lines)
