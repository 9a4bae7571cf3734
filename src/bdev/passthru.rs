//! passthru: a bdev that forwards every I/O unchanged to a claimed base bdev — the
//! template of a stacked module and a way to give a bdev a second name and UUID.

#![forbid(unsafe_code)]

use super::stack::Base;
use super::{BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoChannel, ModuleChannel};
use serde_json::{json, Value};

pub const PRODUCT_NAME: &str = "passthru";

pub struct PassthruBdev {
    base: Base,
}

impl PassthruBdev {
    pub fn base_name(&self) -> &str {
        self.base.name()
    }
}

struct PassthruChannel {
    base: IoChannel,
}

impl ModuleChannel for PassthruChannel {
    fn submit(&mut self, io: BdevIo, _done: &Completer) {
        self.base.submit(io);
    }
}

impl super::Bdev for PassthruBdev {
    fn open_channel(
        &self,
        _bdev: &BdevHandle,
        done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        Ok(Box::new(PassthruChannel {
            base: self.base.open_channel(done)?,
        }))
    }

    fn driver_specific(&self) -> Value {
        json!({"passthru": {"name": "", "base_bdev_name": self.base.name()}})
    }

    fn config(&self, info: &BdevInfo) -> Option<Value> {
        Some(crate::rpc::config_entry(
            "bdev_passthru_create",
            json!({"name": info.name, "base_bdev_name": self.base.name(), "uuid": info.uuid}),
        ))
    }

    fn destruct(&self) {
        self.base.close();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[derive(Debug, Clone)]
pub struct PassthruOpts {
    pub name: String,
    pub base_bdev_name: String,
    pub uuid: Option<String>,
}

pub fn create(
    opts: PassthruOpts,
    done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static,
) {
    let made = (|| {
        let (info, base) = super::stack::open_stacked(
            &opts.name,
            &opts.base_bdev_name,
            "bdev_passthru",
            PRODUCT_NAME,
            opts.uuid.as_deref(),
        )?;
        Ok((info, PassthruBdev { base }))
    })();
    match made {
        Ok((info, bdev)) => super::register(info, Box::new(bdev), done),
        Err(e) => done(Err(e)),
    }
}
