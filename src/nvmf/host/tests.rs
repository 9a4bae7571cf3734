//! Unit tests of the host: transport id parsing, and the queue state machine against a
//! tiny in-test controller (a thread speaking NVMe/TCP through the codec over loopback).

use super::*;

#[test]
fn transport_id_parses_spdk_syntax() {
    let t: TransportId = "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.x:y"
        .parse()
        .unwrap();
    assert_eq!(t, TransportId::tcp("127.0.0.1", 4420, "nqn.x:y"));
    let d: TransportId = "trtype:tcp traddr:::1 trsvcid:1".parse().unwrap();
    assert_eq!(d.subnqn, crate::nvmf::spec::DISCOVERY_NQN);
    assert!("trtype:RDMA traddr:127.0.0.1".parse::<TransportId>().unwrap_err().contains("TCP"));
    assert!("traddr:127.0.0.1 trsvcid:x".parse::<TransportId>().unwrap_err().contains("trsvcid"));
    assert!("adrfam:IPv6 traddr:127.0.0.1".parse::<TransportId>().unwrap_err().contains("IPv6"));
    assert!("trsvcid:1".parse::<TransportId>().unwrap_err().contains("traddr"));
    assert!("bogus:1 traddr:127.0.0.1".parse::<TransportId>().unwrap_err().contains("bogus"));
}
