"""Finding one object by what a user typed, with store-side lookups only (issue 13: no route reads every
object of a kind to answer a question about one): docker's order — an exact id (a get), then a name (the
store's case-insensitive name index, for named kinds), then a unique id prefix (a page of at most two ids
from the store's sorted ids)."""

from __future__ import annotations

from shoal.errors import InvalidArgument, NotFound
from shoal.models.kinds import NAMED_KINDS
from shoal.store.protocol import Store
from shoal.store.txn import Obj


def id_like(ref: str) -> bool:
    """Whether `ref` can be an object id in a store URL (ids are lower-case alphanumerics)."""
    return bool(ref) and ref.isascii() and ref.isalnum()


async def get_if_exists(store: Store, kind: str, ref: str) -> Obj | None:
    if not id_like(ref):
        return None
    try:
        return await store.get(kind, ref)
    except NotFound:
        return None


async def by_prefix(store: Store, kind: str, ref: str, label: str) -> Obj | None:
    """The one object whose id starts with `ref`; None when none does, InvalidArgument when several do."""
    if not id_like(ref):
        return None
    page = await store.page(kind, id_prefix=ref, limit=1)
    if page.next is not None:
        raise InvalidArgument(f"{label} {ref!r} is ambiguous: it prefixes more than one {label} id; use a longer "
                              "prefix")
    return page.items[0] if page.items else None


async def find(store: Store, kind: str, ref: str, label: str) -> Obj:
    """The object of `kind` that `ref` designates (id, name for named kinds, unique id prefix); NotFound
    when nothing matches."""
    found = await get_if_exists(store, kind, ref)
    if found is None and kind in NAMED_KINDS and ref:
        named = await store.page(kind, name=ref)
        found = named.items[0] if named.items else None
    if found is None:
        found = await by_prefix(store, kind, ref, label)
    if found is None:
        raise NotFound(f"{label} {ref!r} not found")
    return found
