//! The zones pool at boot: import decisions (pure plan), Triton dataset layout, and the triton-pool tool PID 1 runs
