//! The `internal.` zone: answers from the [`Directory`](crate::Directory), per caller.

use std::sync::{Arc, RwLock};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, TSigResponseContext};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords, ZoneHandler, ZoneType,
};

use crate::directory::{Answer, Directory};

/// Answers live briefly: instances come and go with deploys.
pub const TTL: u32 = 5;

pub(crate) struct PrivateZone {
    origin: LowerName,
    name: Name,
    pub(crate) directory: Arc<RwLock<Arc<Directory>>>,
}

impl PrivateZone {
    pub(crate) fn new(directory: Arc<RwLock<Arc<Directory>>>) -> Result<Self, crate::DnsError> {
        let name = Name::from_ascii(crate::ZONE).map_err(|e| crate::DnsError::Name(e.to_string()))?;
        Ok(PrivateZone { origin: LowerName::new(&name), name, directory })
    }

    pub(crate) fn origin_name(&self) -> LowerName {
        self.origin.clone()
    }

    fn snapshot(&self) -> Arc<Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn soa(&self) -> Record {
        let rdata = SOA::new(self.name.clone(), self.name.clone(), 1, 3600, 600, 86400, TTL);
        Record::from_rdata(self.name.clone(), TTL, RData::SOA(rdata))
    }

    fn answer(
        &self,
        name: &LowerName,
        rtype: RecordType,
        info: Option<&RequestInfo<'_>>,
    ) -> Result<AuthLookup, LookupError> {
        let nx = || Err(LookupError::ResponseCode(ResponseCode::NXDomain));
        if *name == self.origin {
            return match rtype {
                RecordType::SOA => Ok(AuthLookup::answers(LookupRecords::Section(vec![self.soa()]), None)),
                _ => Err(LookupError::NameExists),
            };
        }
        // Only a request tells who asks; the catalog's own lookups (the SOA for a negative
        // answer) have none and are answered above.
        let Some(info) = info else { return nx() };
        let directory = self.snapshot();
        let Some(caller) = directory.caller(info.src.ip()) else {
            return Err(LookupError::ResponseCode(ResponseCode::Refused));
        };
        let text = name.to_string().to_ascii_lowercase();
        let inner = text.trim_end_matches('.').strip_suffix(".internal").unwrap_or_default();
        let labels: Vec<&str> = inner.split('.').collect();
        match directory.resolve(caller, &labels) {
            Answer::NoSuchName => nx(),
            Answer::Addresses(_) if !matches!(rtype, RecordType::AAAA | RecordType::ANY) => {
                Err(LookupError::NameExists)
            }
            Answer::Addresses(addresses) => {
                let owner = Name::from(name.clone());
                let records = addresses
                    .into_iter()
                    .map(|a| Record::from_rdata(owner.clone(), TTL, RData::AAAA(AAAA(a))))
                    .collect();
                Ok(AuthLookup::answers(LookupRecords::Section(records), None))
            }
        }
    }
}

#[async_trait::async_trait]
impl ZoneHandler for PrivateZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Break(self.answer(name, rtype, request_info))
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        (self.lookup(info.query.name(), info.query.query_type(), Some(&info), lookup_options).await, None)
    }

    async fn nsec_records(&self, _name: &LowerName, _lookup_options: LookupOptions) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Break(Ok(AuthLookup::default()))
    }
}
