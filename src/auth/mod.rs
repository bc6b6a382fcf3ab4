//! Who a request comes from and what it may do. (Being written.)

pub mod htpasswd;
pub mod token;
