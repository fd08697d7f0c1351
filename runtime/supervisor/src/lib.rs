//! Service supervision for PID 1: manifests, restart backoff, log rotation, ordered shutdown, control socket
