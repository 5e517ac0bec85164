"""Plain-Python references shared by the pooling tests; they never call the code under test."""


def loop_output_length(size, k, s, begin, end, d, ceil):
    """torch's output length rule along one axis, for padding (begin, end) and dilation d:
    in ceil mode the last window must start before input + leading pad."""
    span = size + begin + end - (d * (k - 1) + 1)
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + begin:
        out -= 1
    return out
