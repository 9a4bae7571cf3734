//! Round trips and layout checks of the NVMe structures.

use super::*;
use crate::nvmf::wire::{ascii_field, nul_field};

/// Fills every byte of a structure's encoding by decoding a patterned buffer, then checks
/// that encoding reproduces the pattern in every non-reserved byte and that a second
/// decode is identical (round trip at the byte level).
fn pattern<const N: usize>() -> [u8; N] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
}

#[test]
fn sqe_layout_and_round_trip() {
    let mut sqe = Sqe::new(io_opc::WRITE, 0xbeef, 7);
    sqe.set_lba_range(0x1_2345_6789, 256);
    sqe.dptr = SglDescriptor::in_capsule(0, 4096);
    sqe.cdw15 = 0xdead_beef.into();
    let b = sqe.to_bytes();
    assert_eq!(b[0], io_opc::WRITE);
    assert_eq!(b[1] >> 6, psdt::SGL_MPTR_CONTIG);
    assert_eq!(&b[2..4], &0xbeefu16.to_le_bytes());
    assert_eq!(&b[4..8], &7u32.to_le_bytes());
    assert_eq!(&b[40..44], &0x2345_6789u32.to_le_bytes());
    assert_eq!(&b[44..48], &1u32.to_le_bytes());
    assert_eq!(&b[48..50], &255u16.to_le_bytes());
    assert_eq!(&b[32..36], &4096u32.to_le_bytes());
    assert_eq!(b[39], 0x01);
    assert_eq!(&b[60..64], &0xdead_beefu32.to_le_bytes());
    let back = Sqe::decode(&b);
    assert_eq!(back, sqe);
    assert_eq!(back.slba(), 0x1_2345_6789);
    assert_eq!(back.nlb(), 256);
    assert!(back.dptr.is_in_capsule());
    // Every byte round-trips (an SQE has no reserved bytes in our layout).
    let p = pattern::<64>();
    assert_eq!(Sqe::decode(&p).to_bytes(), p);
}

#[test]
fn sgl_descriptors() {
    let t = SglDescriptor::transport_data_block(131072);
    assert_eq!(t.to_bytes()[15], 0x5a);
    assert!(t.is_transport_data_block());
    assert_eq!(SglDescriptor::decode(&t.to_bytes()), t);
    let k = SglDescriptor::keyed(0x1000, 0x12_3456, 0xaabb_ccdd);
    let kb = k.to_bytes();
    assert_eq!(&kb[8..11], &[0x56, 0x34, 0x12]);
    assert_eq!(&kb[11..15], &0xaabb_ccddu32.to_le_bytes());
    let k2 = SglDescriptor::decode(&kb);
    assert!(k2.is_keyed());
    assert_eq!(k2.keyed_length(), 0x12_3456);
    assert_eq!(k2.key(), 0xaabb_ccdd);
}

#[test]
fn cqe_status_and_phase() {
    let mut cqe = Cqe::new(0x1234, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    cqe.set_phase(true);
    cqe.sqhd = 9.into();
    cqe.sqid = 2.into();
    cqe.dw0 = connect_invalid_param_dw0(true, connect_off::HOSTNQN).into();
    let b = cqe.to_bytes();
    let sf = u16::from_le_bytes([b[14], b[15]]);
    assert_eq!(sf & 1, 1);
    assert_eq!((sf >> 1) & 0xff, 0x82);
    assert_eq!((sf >> 9) & 0x7, 1);
    assert_eq!(sf >> 15, 1, "DNR is bit 15 of the status field");
    assert_eq!(b[2], 1, "IATTR set for a data field");
    assert_eq!(u16::from_le_bytes([b[0], b[1]]), 512);
    let back = Cqe::decode(&b);
    assert_eq!(back, cqe);
    assert!(back.status().dnr());
    assert!(!back.status().more());
    assert_eq!(connect_invalid_param_from_dw0(back.dw0.get()), (true, 512));
    assert!(back.status().same_code(Status::CONNECT_INVALID_PARAMETERS));
    let s = Status::UNRECOVERED_READ_ERROR;
    assert_eq!((s.sct(), s.sc()), (2, 0x81));
    let s = Status::INTERNAL_ERROR.with_more().with_crd(2);
    assert_eq!((s.more(), s.crd(), s.sc()), (true, 2, 6));
    assert!(Status::SUCCESS.is_success());
    let p = pattern::<16>();
    assert_eq!(Cqe::decode(&p).to_bytes(), p);
}

#[test]
fn fabrics_commands_round_trip() {
    let connect = FabricsCommand::Connect(ConnectCmd {
        cid: 3,
        sgl: SglDescriptor::in_capsule(0, 1024),
        recfmt: 0,
        qid: 4,
        sqsize: 127,
        cattr: 0x4,
        kato: 120_000,
    });
    let sqe = connect.to_sqe();
    let b = sqe.to_bytes();
    assert_eq!(b[0], 0x7f);
    assert_eq!(b[4], fctype::CONNECT);
    assert_eq!(&b[connect_off::QID as usize..][..2], &4u16.to_le_bytes());
    assert_eq!(
        &b[connect_off::SQSIZE as usize..][..2],
        &127u16.to_le_bytes()
    );
    assert_eq!(b[connect_off::CATTR as usize], 0x4);
    assert_eq!(
        &b[connect_off::KATO as usize..][..4],
        &120_000u32.to_le_bytes()
    );
    let cmds = [
        connect,
        FabricsCommand::PropertyGet(PropertyGetCmd {
            cid: 5,
            size8: true,
            offset: prop::CAP,
        }),
        FabricsCommand::PropertySet(PropertySetCmd {
            cid: 6,
            size8: false,
            offset: prop::CC,
            value: 0x0046_0001,
        }),
        FabricsCommand::Disconnect { cid: 7, recfmt: 0 },
        FabricsCommand::AuthenticationSend(AuthCmd {
            cid: 8,
            sgl: SglDescriptor::in_capsule(0, 64),
            secp: 0xe9,
            spsp0: 1,
            spsp1: 2,
            length: 64,
        }),
        FabricsCommand::AuthenticationReceive(AuthCmd {
            cid: 9,
            sgl: SglDescriptor::transport_data_block(128),
            secp: 0xe9,
            spsp0: 3,
            spsp1: 4,
            length: 128,
        }),
        FabricsCommand::Unknown {
            cid: 10,
            fctype: 0x42,
        },
    ];
    for c in cmds {
        let sqe = Sqe::decode(&c.to_sqe().to_bytes());
        assert_eq!(FabricsCommand::parse(&sqe), Some(c));
    }
    assert_eq!(FabricsCommand::parse(&Sqe::new(io_opc::READ, 1, 1)), None);
}

#[test]
fn connect_data_round_trip() {
    let cd = ConnectData {
        hostid: [0xab; 16],
        cntlid: CNTLID_DYNAMIC.into(),
        subnqn: nul_field("nqn.2016-06.io.pollux:cnode1"),
        hostnqn: nul_field("nqn.2014-08.org.nvmexpress:uuid:1234"),
        ..Default::default()
    };
    let b = cd.to_bytes();
    assert_eq!(&b[16..18], &[0xff, 0xff]);
    assert_eq!(&b[256..260], b"nqn.");
    let back = ConnectData::decode(&b);
    assert_eq!(back, cd);
    assert_eq!(back.subnqn_str(), Some("nqn.2016-06.io.pollux:cnode1"));
    assert!(back.nqns_terminated());
    let mut unterminated = back.clone();
    unterminated.hostnqn = [b'a'; 256];
    assert!(!unterminated.nqns_terminated());
}

#[test]
fn properties_bit_fields() {
    let cap = Cap::new()
        .with_mqes(127)
        .with_cqr(true)
        .with_ams(0)
        .with_to(15)
        .with_dstrd(0)
        .with_nssrs(false)
        .with_css(1)
        .with_bps(false)
        .with_mpsmin(0)
        .with_mpsmax(4)
        .with_cmbs(false);
    let v = cap.to_u64();
    assert_eq!(v & 0xffff, 127);
    assert_eq!(v >> 16 & 1, 1);
    assert_eq!(v >> 24 & 0xff, 15);
    assert_eq!(v >> 37 & 0xff, 1);
    assert_eq!(v >> 52 & 0xf, 4);
    assert_eq!(Cap::from_u64(v), cap);
    let cc = Cc::new()
        .with_en(true)
        .with_css(0)
        .with_mps(0)
        .with_ams(0)
        .with_shn(shutdown::NORMAL_OR_OCCURRING)
        .with_iosqes(6)
        .with_iocqes(4);
    assert_eq!(cc.to_u32(), 0x0046_4001);
    assert_eq!(Cc::from_u32(cc.to_u32()), cc);
    let csts = Csts::new().with_rdy(true).with_shst(shutdown::COMPLETE);
    assert_eq!(csts.to_u32(), 0b1001);
    assert_eq!(Csts::from_u32(csts.to_u32()), csts);
    assert_eq!(Version::V1_3.to_u32(), 0x0001_0300);
    assert_eq!(Version::from_u32(0x0001_0400), Version::V1_4);
    assert!(prop::is_8_bytes(prop::CAP) && !prop::is_8_bytes(prop::CSTS));
}

#[test]
fn identify_controller_offsets() {
    let mut id = IdentifyController {
        vid: 0x1b36.into(),
        ssvid: 0x1af4.into(),
        sn: ascii_field("POLLUX0001"),
        mn: ascii_field("pollux"),
        fr: ascii_field("0.1"),
        ieee: [0x00, 0x54, 0x52],
        mdts: 5,
        cntlid: 1.into(),
        ver: (Version::V1_4.to_u32()).into(),
        cntrltype: cntrltype::IO,
        kas: 10.into(),
        sqes: 0x66,
        cqes: 0x44,
        maxcmd: 128.into(),
        nn: 32.into(),
        oncs: (oncs::DATASET_MANAGEMENT | oncs::WRITE_ZEROES).into(),
        sgls: (sgls::SUPPORTED | sgls::OFFSET | sgls::TRANSPORT_DATA_BLOCK).into(),
        subnqn: nul_field("nqn.2016-06.io.pollux:cnode1"),
        ioccsz: ((8192 + 64) / 16).into(),
        iorcsz: 1.into(),
        msdbd: 1,
        ..Default::default()
    };
    id.psd[0].mp = 2500.into();
    id.vs[1023] = 0x5a;
    let b = id.to_bytes();
    assert_eq!(&b[0..2], &0x1b36u16.to_le_bytes());
    assert_eq!(&b[4..14], b"POLLUX0001");
    assert_eq!(b[14], b' ');
    assert_eq!(b[77], 5);
    assert_eq!(b[111], 1);
    assert_eq!(&b[320..322], &10u16.to_le_bytes());
    assert_eq!(b[512], 0x66);
    assert_eq!(&b[516..520], &32u32.to_le_bytes());
    assert_eq!(&b[520..522], &0x0cu16.to_le_bytes());
    assert_eq!(&b[768..772], b"nqn.");
    assert_eq!(&b[1792..1796], &516u32.to_le_bytes());
    assert_eq!(b[1803], 1);
    assert_eq!(&b[2048..2050], &2500u16.to_le_bytes());
    assert_eq!(b[4095], 0x5a);
    assert_eq!(IdentifyController::decode(&b), id);
    assert_eq!(crate::nvmf::field_str(&id.sn), Some("POLLUX0001"));
}

#[test]
fn identify_namespace_and_lists() {
    let mut ns = IdentifyNamespace {
        nsze: 65536.into(),
        ncap: 65536.into(),
        nuse: 65536.into(),
        nlbaf: 0,
        flbas: 0,
        dlfeat: 1,
        nguid: [7; 16],
        eui64: [9; 8],
        ..Default::default()
    };
    ns.lbaf[0] = LbaFormat {
        ms: 0.into(),
        lbads: 12,
        rp: 0,
    };
    let b = ns.to_bytes();
    assert_eq!(&b[0..8], &65536u64.to_le_bytes());
    assert_eq!(b[33], 1);
    assert_eq!(&b[104..120], &[7; 16]);
    assert_eq!(&b[120..128], &[9; 8]);
    assert_eq!(b[130], 12);
    let back = IdentifyNamespace::decode(&b);
    assert_eq!(back, ns);
    assert_eq!(back.block_size(), Some(4096));
    let mut bad = back.clone();
    bad.flbas = 3;
    assert_eq!(bad.block_size(), None);

    let mut list = [0u8; 4096];
    encode_ns_list([1, 2, 5], &mut list);
    assert_eq!(decode_ns_list(&list), vec![1, 2, 5]);

    let descs = [
        NsIdDescriptor::Eui64([1; 8]),
        NsIdDescriptor::Nguid([2; 16]),
        NsIdDescriptor::Uuid([3; 16]),
        NsIdDescriptor::Csi(0),
    ];
    let mut buf = [0u8; 4096];
    encode_ns_id_descriptors(&descs, &mut buf);
    assert_eq!(&buf[0..4], &[nidt::EUI64, 8, 0, 0]);
    assert_eq!(&buf[12..16], &[nidt::NGUID, 16, 0, 0]);
    assert_eq!(decode_ns_id_descriptors(&buf).unwrap(), descs);
    // A truncated or malformed list is an error, never a panic.
    assert!(decode_ns_id_descriptors(&buf[..20]).is_err());
    buf[1] = 9;
    assert!(decode_ns_id_descriptors(&buf).is_err());
}

#[test]
fn log_pages_round_trip() {
    let e = ErrorLogEntry {
        error_count: 3.into(),
        sqid: 1.into(),
        cid: 77.into(),
        status_field: (Status::LBA_OUT_OF_RANGE.0 << 1).into(),
        parameter_error_location: 0xffff.into(),
        lba: (1 << 40).into(),
        nsid: 1.into(),
        vs: 0,
        trtype: trtype::TCP,
        cs: 0.into(),
        trtype_specific: 0.into(),
        ..Default::default()
    };
    assert_eq!(ErrorLogEntry::decode(&e.to_bytes()), e);
    let s = SmartLog {
        temperature: 310.into(),
        avail_spare: 100,
        data_units_read: (u128::MAX - 5).into(),
        host_write_commands: (1 << 100).into(),
        temp_sensor: [
            1.into(),
            2.into(),
            3.into(),
            4.into(),
            5.into(),
            6.into(),
            7.into(),
            8.into(),
        ],
        ..Default::default()
    };
    let b = s.to_bytes();
    assert_eq!(&b[1..3], &310u16.to_le_bytes());
    assert_eq!(&b[32..48], &(u128::MAX - 5).to_le_bytes());
    assert_eq!(&b[80..96], &(1u128 << 100).to_le_bytes());
    assert_eq!(&b[200..202], &1u16.to_le_bytes());
    assert_eq!(SmartLog::decode(&b), s);
    let mut fw = FirmwareSlotLog {
        afi: 1,
        ..Default::default()
    };
    fw.frs[0] = ascii_field("0.1");
    let fb = fw.to_bytes();
    assert_eq!(&fb[8..11], b"0.1");
    assert_eq!(FirmwareSlotLog::decode(&fb), fw);
}

#[test]
fn discovery_log_round_trip() {
    let entry = |port: u16, nqn: &str| DiscoveryLogEntry {
        trtype: trtype::TCP,
        adrfam: adrfam::IPV4,
        subtype: subtype::NVME,
        treq: treq::SECURE_CHANNEL_NOT_REQUIRED,
        portid: port.into(),
        cntlid: CNTLID_DYNAMIC.into(),
        asqsz: 32.into(),
        eflags: 0.into(),
        trsvcid: nul_field("4420"),
        subnqn: nul_field(nqn),
        traddr: nul_field("127.0.0.1"),
        tsas: [0; 256],
        ..Default::default()
    };
    let entries = vec![entry(1, "nqn.a"), entry(2, "nqn.b")];
    let page = encode_discovery_log(42, &entries);
    assert_eq!(page.len(), 3 * 1024);
    assert_eq!(&page[8..16], &2u64.to_le_bytes());
    assert_eq!(page[1024], trtype::TCP);
    assert_eq!(&page[1024 + 32..1024 + 36], b"4420");
    assert_eq!(&page[2048 + 512..2048 + 521], b"127.0.0.1");
    let (hdr, back) = decode_discovery_log(&page).unwrap();
    assert_eq!((hdr.genctr.get(), hdr.numrec.get()), (42, 2));
    assert_eq!(back, entries);
    // A header claiming more records than present decodes the ones that are there.
    let (_, partial) = decode_discovery_log(&page[..2048]).unwrap();
    assert_eq!(partial.len(), 1);
    assert!(decode_discovery_log(&page[..100]).is_none());
}

#[test]
fn every_struct_decodes_any_bytes_and_round_trips() {
    // Decoding arbitrary bytes never panics, and re-encoding then decoding is stable.
    macro_rules! stable {
        ($t:ty, $n:expr) => {{
            let p = pattern::<$n>();
            let v = <$t>::decode(&p);
            assert_eq!(<$t>::decode(&v.to_bytes()), v, stringify!($t));
        }};
    }
    stable!(Sqe, 64);
    stable!(SglDescriptor, 16);
    stable!(ConnectData, 1024);
    stable!(IdentifyController, 4096);
    stable!(IdentifyNamespace, 4096);
    stable!(ErrorLogEntry, 64);
    stable!(SmartLog, 512);
    stable!(FirmwareSlotLog, 512);
    stable!(DiscoveryLogHeader, 1024);
    stable!(DiscoveryLogEntry, 1024);
    stable!(PowerStateDescriptor, 32);
    stable!(LbaFormat, 4);
}

#[test]
fn admin_and_io_command_fields() {
    let id = IdentifyCmd {
        nsid: 0,
        cns: cns::CONTROLLER,
        cntid: 0x1234,
        csi: 0,
    };
    let sqe = Sqe::decode(
        &id.to_sqe(1, SglDescriptor::transport_data_block(4096))
            .to_bytes(),
    );
    assert_eq!(sqe.opcode, admin_opc::IDENTIFY);
    assert_eq!(sqe.cdw10, 0x1234_0001);
    assert_eq!(IdentifyCmd::parse(&sqe), id);

    let glp = GetLogPageCmd {
        rae: true,
        lsp: 1,
        lsi: 7,
        ..GetLogPageCmd::new(0xffff_ffff, log_id::DISCOVERY, 1 << 33, 0x40_0000)
    };
    assert_eq!(glp.numd, 0xf_ffff);
    let sqe = glp.to_sqe(2, SglDescriptor::transport_data_block(0x40_0000));
    assert_eq!(sqe.cdw10 & 0xff, 0x70);
    assert_eq!(sqe.cdw10 >> 16, 0xffff, "NUMDL");
    assert_eq!(sqe.cdw11 & 0xffff, 0xf, "NUMDU");
    assert_eq!((sqe.cdw12.get(), sqe.cdw13.get()), (0, 2));
    let back = GetLogPageCmd::parse(&sqe);
    assert_eq!(back, glp);
    assert_eq!(back.length(), 0x40_0000);

    let f = FeaturesCmd {
        nsid: 0,
        fid: feat::NUMBER_OF_QUEUES,
        sel: 0,
        save: false,
        cdw11: num_queues_value(3, 3),
    };
    let sqe = f.to_sqe(admin_opc::SET_FEATURES, 3);
    assert_eq!(FeaturesCmd::parse(&sqe), f);
    assert_eq!(num_queues_from_value(sqe.cdw11.get()), (3, 3));

    let w = Sqe::rw(
        io_opc::READ,
        4,
        1,
        100,
        8,
        SglDescriptor::transport_data_block(4096),
    );
    assert_eq!((w.slba(), w.nlb(), w.fua()), (100, 8, false));
    assert_eq!(w.data_direction(), DataDirection::ControllerToHost);
    assert_eq!(
        Sqe::new(io_opc::WRITE, 1, 1).data_direction(),
        DataDirection::HostToController
    );
    assert_eq!(
        Sqe::new(io_opc::FLUSH, 1, 1).data_direction(),
        DataDirection::None
    );
    let connect = FabricsCommand::Connect(ConnectCmd::default()).to_sqe();
    assert_eq!(connect.data_direction(), DataDirection::HostToController);
    let pget = FabricsCommand::PropertyGet(PropertyGetCmd::default()).to_sqe();
    assert_eq!(pget.data_direction(), DataDirection::None);
    let id = IdentifyCmd::default().to_sqe(1, SglDescriptor::default());
    assert_eq!(id.data_direction(), DataDirection::ControllerToHost);
    let z = Sqe::write_zeroes(5, 1, 7, 65536, true);
    assert_eq!(
        (z.slba(), z.nlb(), (z.cdw12 >> 25 & 1).get()),
        (7, 65536, 1)
    );
    let d = Sqe::dataset_management(6, 1, 2, dsm::DEALLOCATE, SglDescriptor::in_capsule(0, 32));
    assert_eq!((d.cdw10.get(), d.cdw11.get()), (1, 4));
    let ranges = [
        DsmRange {
            context_attributes: 0.into(),
            nlb: 8.into(),
            slba: 0.into(),
        },
        DsmRange {
            context_attributes: 0.into(),
            nlb: 16.into(),
            slba: (1 << 40).into(),
        },
    ];
    let mut data = Vec::new();
    for r in &ranges {
        data.extend_from_slice(&r.to_bytes());
    }
    assert_eq!(&data[20..24], &16u32.to_le_bytes());
    assert_eq!(decode_dsm_ranges(&data, 1).unwrap(), ranges);
    assert!(decode_dsm_ranges(&data[..31], 1).is_none());
}

#[test]
fn reservation_structures_round_trip() {
    let d = ReservationRegisterData {
        crkey: 0x1122.into(),
        nrkey: 0x3344.into(),
    };
    let b = d.to_bytes();
    assert_eq!(&b[8..16], &0x3344u64.to_le_bytes());
    assert_eq!(ReservationRegisterData::decode(&b), d);
    assert_eq!(ReservationReleaseData::decode_slice(&b[..7]), None);
    let p = pattern::<64>();
    assert_eq!(RegistrantExtended::decode(&p).to_bytes(), p);
    assert_eq!(ReservationNotificationLog::decode(&p).to_bytes(), p);
    assert_eq!(
        ReservationStatusExtended::decode(&p).status.regctl.get(),
        u16::from_le_bytes([p[5], p[6]])
    );
}

#[test]
fn reservation_cdw10_is_what_parse_reads_back() {
    let mut sqe = Sqe::new(io_opc::RESERVATION_ACQUIRE, 1, 1);
    for action in 0..8 {
        for iekey in [false, true] {
            for rtype in [0, 1, 6, 0xff] {
                for cptpl in 0..4 {
                    let cmd = ReservationCmd {
                        action,
                        iekey,
                        rtype,
                        cptpl,
                    };
                    sqe.cdw10 = cmd.cdw10().into();
                    assert_eq!(ReservationCmd::parse(&sqe), cmd);
                }
            }
        }
    }
    // The bits where NVMe puts them: RACQA 2:0, IEKEY 3, RTYPE 15:8, CPTPL 31:30.
    let cmd = ReservationCmd {
        action: 2,
        iekey: true,
        rtype: 3,
        cptpl: 3,
    };
    assert_eq!(cmd.cdw10(), 0xC000_030A);
}
