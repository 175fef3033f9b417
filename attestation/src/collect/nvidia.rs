//! NVIDIA GPU evidence collection (in progress).
