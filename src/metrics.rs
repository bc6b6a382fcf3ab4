//! Prometheus metrics and health checks. (Being written.)
