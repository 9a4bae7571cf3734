//! nvmf: placeholder until its issue lands.
