//! sock: placeholder until its issue lands.
