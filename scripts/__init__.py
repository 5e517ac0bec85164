"""Scripts the Dockerfile, the Makefile and CI share."""
