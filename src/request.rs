//! [`ObjectRequest`]: one request for an object as the layers below the proxy need it:
//! who asks for which object, read through which origins, which content types its answer
//! may have, and what goes to the origin if it streams past the cache. The proxy builds
//! it once, after the authorize phase; the cache, its fills and renders, and presign take
//! it from there.

use std::sync::Arc;

use crate::auth::Tenant;
use crate::error::Error;
use crate::object::ObjectMeta;
use crate::origin::{GetRequest, Origins};
use crate::pattern::MediaRange;
use crate::peer::ClientKey;
use crate::sendfile::Spans;
use crate::source::ObjectRef;

#[derive(Clone)]
pub struct ObjectRequest {
    pub origins: Arc<Origins>,
    /// The bucket's tenant, whose credentials and origin slots the request uses.
    pub tenant: Arc<Tenant>,
    /// Who asks (the peer, or the client a trusted proxy names): whose share of the
    /// tenant's origin slots the request takes.
    pub client: ClientKey,
    pub obj: ObjectRef,
    /// `[server] allowed_content_types` of the config the request runs under.
    pub allowed: Arc<[MediaRange]>,
    /// A `HEAD`: the answer needs the object's length, not its body.
    pub head: bool,
    /// What the origin is asked for when the object streams past the cache: the
    /// client's range and validators (the whole object when there are none).
    pub passthrough: GetRequest,
    /// Where a body sent from a file is queued, when the connection can send one (plain
    /// HTTP/1; `crate::sendfile`).
    pub spans: Option<Spans>,
}

impl ObjectRequest {
    /// `Ok` if an object with `meta` may be answered (its content type is allowed);
    /// else the `415`.
    pub fn allows(&self, meta: &ObjectMeta) -> Result<(), Error> {
        if meta.content_type_allowed(&self.allowed) {
            Ok(())
        } else {
            Err(Error::unsupported_media_type(
                meta.fields.content_type.as_deref(),
            ))
        }
    }

    /// The same object, asked for whole with `GET` (a variant's source).
    pub fn whole(&self) -> ObjectRequest {
        ObjectRequest {
            head: false,
            passthrough: self.get(),
            spans: None,
            ..self.clone()
        }
    }

    /// A plain GET of the whole object, on this request's client's share.
    pub fn get(&self) -> GetRequest {
        GetRequest {
            client: Some(self.client),
            ..GetRequest::default()
        }
    }
}
