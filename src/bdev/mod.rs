//! bdev: placeholder until its issue lands.
