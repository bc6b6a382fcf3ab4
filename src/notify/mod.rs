//! Notifications: distribution's event envelopes sent to webhook endpoints. (Being written.)
