"""The Admin gRPC API: key administration on its own port, behind a bearer token.

The only module that knows the Admin messages. The servicer turns them into
`authz.keyadmin` calls; AdminClient (used by `distill-guard keys --server`)
turns answers back into the same plain values, so both ends share one vocabulary.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from redis.exceptions import RedisError

from authz.accounts import Account, Kyc
from authz.app import App
from authz.gen.distill_guard.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.keyadmin import CreatedKey, ErrorCode, KeyAdmin, KeyAdminError, KeyView, NewAccount

log = logging.getLogger("distill_guard.admin")

_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "read_only": grpc.StatusCode.FAILED_PRECONDITION,
    "exists": grpc.StatusCode.ALREADY_EXISTS,
}
_CODE: dict[grpc.StatusCode, ErrorCode] = {status: code for code, status in _STATUS.items()}

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Context = grpc.aio.ServicerContext[Any, Any]
_Method = Callable[["AdminServicer", _Req, _Context], Awaitable[_Resp]]
if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # not subscriptable at run time
    _Interceptor = grpc.aio.ServerInterceptor


# --- the server side ---------------------------------------------------------------


class _BearerToken(_Interceptor):
    """Lets a call through only with `authorization: Bearer <token>` metadata."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._refuse = grpc.unary_unary_rpc_method_handler(_unauthenticated)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        """Check the token, in constant time, before the method runs."""
        metadata = dict(handler_call_details.invocation_metadata or ())
        scheme, _, presented = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.encode(), self._token):
            return await continuation(handler_call_details)
        log.warning("admin call refused: bad token", extra={"method": handler_call_details.method})
        return self._refuse


async def _unauthenticated(request: object, context: _Context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong admin token")


def _status_on_error(method: _Method[_Req, _Resp]) -> _Method[_Req, _Resp]:
    """The one place refusals and store faults become gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: AdminServicer, request: _Req, context: _Context) -> _Resp:
        try:
            return await method(self, request, context)
        except KeyAdminError as exc:
            await context.abort(_STATUS[exc.code], str(exc))
            raise  # not reached: abort raises
        except RedisError as exc:
            log.warning("admin call failed: store", extra={"error": repr(exc)})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the key store is unavailable")
            raise

    return wrapper


class AdminServicer:
    """distill_guard.admin.v1.Admin over a KeyAdmin (every method is implemented)."""

    def __init__(self, admin: KeyAdmin) -> None:
        self._admin = admin

    @_status_on_error
    async def CreateKey(  # noqa: N802 (the gRPC method name)
        self, request: admin_pb2.CreateKeyRequest, context: _Context
    ) -> admin_pb2.CreateKeyResponse:
        """Mint a key; the secret is in the answer and nowhere else."""
        new_account = None
        if request.HasField("new_account"):
            n = request.new_account
            new_account = NewAccount(tier=n.tier, kyc=n.kyc, country=n.country, entity=n.entity)
        created = await self._admin.create_key(
            request.account, new_account=new_account, expires=_seconds(request, "expires")
        )
        return admin_pb2.CreateKeyResponse(key=_key_message(created.key), secret=created.secret)

    @_status_on_error
    async def RevokeKey(  # noqa: N802 (the gRPC method name)
        self, request: admin_pb2.RevokeKeyRequest, context: _Context
    ) -> admin_pb2.RevokeKeyResponse:
        """Revoke a key."""
        return admin_pb2.RevokeKeyResponse(
            key=_key_message(await self._admin.revoke_key(request.key_id))
        )

    @_status_on_error
    async def ListKeys(  # noqa: N802 (the gRPC method name)
        self, request: admin_pb2.ListKeysRequest, context: _Context
    ) -> admin_pb2.ListKeysResponse:
        """List keys, all or one account's."""
        keys = await self._admin.list_keys(request.account or None)
        return admin_pb2.ListKeysResponse(keys=[_key_message(k) for k in keys])

    @_status_on_error
    async def GetAccount(  # noqa: N802 (the gRPC method name)
        self, request: admin_pb2.GetAccountRequest, context: _Context
    ) -> admin_pb2.Account:
        """Read one account."""
        return _account_message(await self._admin.get_account(request.account))


def key_admin_for(app: App) -> KeyAdmin:
    """The KeyAdmin of a running server: its registry, hasher, rules and accounts file."""
    watched = app.accounts

    def tiers() -> Collection[str]:
        return app.rules.current().tiers.keys()  # the rules of this moment: they hot-reload

    return KeyAdmin(
        app.registry,
        app.hasher,
        app.clock,
        tiers=tiers,
        accounts_file=None if watched is None else watched.current,
    )


async def start_admin_server(
    listen: str, token: str, app: App, *, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int]:
    """Serve the Admin API on `listen` to callers presenting `token`; the server and its port.

    With `credentials` the port speaks TLS (the server's certificate); plaintext otherwise.
    """
    if not token:
        raise ValueError("the Admin API needs a non-empty token")
    server = grpc.aio.server(interceptors=[_BearerToken(token)], options=[("grpc.so_reuseport", 0)])
    admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(key_admin_for(app)), server)
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return server, port


# --- the client side ---------------------------------------------------------------


class AdminCallError(Exception):
    """The Admin API could not be asked: unreachable, wrong token, or a server fault."""


class AdminClient:
    """The Admin API from the caller's side, with KeyAdmin's methods and values."""

    def __init__(
        self,
        target: str,
        token: str,
        *,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._target = target
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._stub = admin_pb2_grpc.AdminStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    async def _call(self, method: str, request: object) -> Any:
        try:
            return await getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            code = _CODE.get(exc.code())
            if code is not None:
                raise KeyAdminError(code, exc.details() or "") from None
            raise AdminCallError(
                f"admin API at {self._target}: {exc.code().name}: {exc.details()}"
            ) from None

    async def create_key(
        self,
        account_id: str,
        *,
        new_account: NewAccount | None = None,
        expires: float | None = None,
    ) -> CreatedKey:
        """See KeyAdmin.create_key."""
        new = None
        if new_account is not None:
            new = admin_pb2.NewAccount(
                entity=new_account.entity,
                tier=new_account.tier,
                kyc=new_account.kyc,
                country=new_account.country,
            )
        request = admin_pb2.CreateKeyRequest(
            account=account_id, new_account=new, expires=_timestamp(expires)
        )
        response = await self._call("CreateKey", request)
        return CreatedKey(_key_view(response.key), response.secret)

    async def revoke_key(self, key_id: str) -> KeyView:
        """See KeyAdmin.revoke_key."""
        response = await self._call("RevokeKey", admin_pb2.RevokeKeyRequest(key_id=key_id))
        return _key_view(response.key)

    async def list_keys(self, account_id: str | None = None) -> list[KeyView]:
        """See KeyAdmin.list_keys."""
        request = admin_pb2.ListKeysRequest(account=account_id or "")
        response = await self._call("ListKeys", request)
        return [_key_view(k) for k in response.keys]

    async def get_account(self, account_id: str) -> Account:
        """See KeyAdmin.get_account."""
        response = await self._call("GetAccount", admin_pb2.GetAccountRequest(account=account_id))
        return _account_value(response)


# --- translation -------------------------------------------------------------------


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def _seconds(message: Any, field: str) -> float | None:
    if not message.HasField(field):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, field)
    return float(ts.seconds + ts.nanos / 1e9)


def _key_message(key: KeyView) -> admin_pb2.Key:
    return admin_pb2.Key(
        key_id=key.key_id,
        account=key.account,
        entity=key.entity,
        tier=key.tier,
        status=key.status,
        expires=_timestamp(key.expires),
        created=_timestamp(key.created),
    )


def _key_view(key: admin_pb2.Key) -> KeyView:
    return KeyView(
        key_id=key.key_id,
        account=key.account,
        entity=key.entity,
        tier=key.tier,
        status=key.status,
        expires=_seconds(key, "expires"),
        created=_seconds(key, "created"),
    )


def _account_message(account: Account) -> admin_pb2.Account:
    return admin_pb2.Account(
        account=account.account,
        entity=account.entity,
        tier=account.tier,
        kyc=account.kyc.value,
        country=account.country,
        created=_timestamp(account.created),
    )


def _account_value(account: admin_pb2.Account) -> Account:
    return Account(
        account=account.account,
        entity=account.entity,
        tier=account.tier,
        kyc=Kyc(account.kyc),
        country=account.country,
        created=_seconds(account, "created"),
    )
