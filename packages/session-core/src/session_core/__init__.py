"""session-core: dependency-free distributed session tracking.

Open sessions with ``with``; they nest, metadata merges outer → inner, and every trace recorded inside lands
in storage under the session's whole uid chain, wherever it was recorded.
"""

from __future__ import annotations

from session_core._version import __version__
from session_core.baggage import (
    context_from_baggage_items,
    context_to_baggage_items,
    decode_baggage,
    encode_baggage,
    strip_session_members,
)
from session_core.bind import BoundSessionCallable, bind_session
from session_core.context import CONTEXT_VERSION, make_context, validate_context
from session_core.errors import (
    ContextTooLarge,
    InvalidSessionContext,
    MissingOptionalDependency,
    SessionError,
    SessionStateError,
    SignatureError,
    StorageError,
    StorageNotAddressable,
    UnknownStorageScheme,
    UnserializableMetadata,
)
from session_core.helpers import (
    current_context,
    get_active_session_uids,
    get_active_sessions,
    get_current_metadata,
    get_current_session,
    get_current_session_name,
    record_trace,
)
from session_core.hosts import HostAllowList, host_of, resolve_propagate_to
from session_core.outgoing import portable_metadata, session_baggage
from session_core.registry import (
    get_backend,
    open_storage,
    register_ambient_provider,
    register_backend,
    register_storage_scheme,
    storage_schemes,
)
from session_core.restore import restore_session
from session_core.routing import assemble_routing_metadata, context_from_routing_metadata
from session_core.session import (
    BaseSession,
    ContextVarSession,
    SessionMetadata,
    SessionProtocol,
    default_storage,
    metadata_version,
)
from session_core.signing import sign_context, verify_context
from session_core.slug import (
    build_proxied_base_url,
    decode_metadata_slug,
    encode_metadata_slug,
    extract_metadata_from_path,
)
from session_core.storage import ContextStore, InMemoryStorage, SessionStorage
from session_core.trace import Trace
from session_core.urls import redact_url

__all__ = [
    "CONTEXT_VERSION",
    "BaseSession",
    "BoundSessionCallable",
    "ContextStore",
    "ContextTooLarge",
    "ContextVarSession",
    "HostAllowList",
    "InMemoryStorage",
    "InvalidSessionContext",
    "MissingOptionalDependency",
    "SessionError",
    "SessionProtocol",
    "SessionMetadata",
    "SessionStateError",
    "SessionStorage",
    "SignatureError",
    "StorageError",
    "StorageNotAddressable",
    "Trace",
    "UnknownStorageScheme",
    "UnserializableMetadata",
    "__version__",
    "assemble_routing_metadata",
    "bind_session",
    "build_proxied_base_url",
    "context_from_baggage_items",
    "context_from_routing_metadata",
    "context_to_baggage_items",
    "current_context",
    "decode_baggage",
    "decode_metadata_slug",
    "default_storage",
    "encode_baggage",
    "encode_metadata_slug",
    "extract_metadata_from_path",
    "get_active_session_uids",
    "get_active_sessions",
    "get_backend",
    "get_current_metadata",
    "get_current_session",
    "get_current_session_name",
    "host_of",
    "make_context",
    "metadata_version",
    "open_storage",
    "portable_metadata",
    "record_trace",
    "redact_url",
    "register_ambient_provider",
    "register_backend",
    "register_storage_scheme",
    "resolve_propagate_to",
    "restore_session",
    "session_baggage",
    "sign_context",
    "storage_schemes",
    "strip_session_members",
    "validate_context",
    "verify_context",
]
