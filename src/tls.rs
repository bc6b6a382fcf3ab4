//! HTTPS through OpenSSL (`http.tls`). (Being written.)
