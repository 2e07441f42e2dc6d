"""Where a store lives: a local folder or an object-storage URL, and what zarr opens there.

`store_location` is the one function every writer and reader passes a store's location
through. It gives a `Path` for a local store (a plain path or a `file://` URL) and a
`StoreURL` for one on object storage (`s3://bucket/prefix/name.zarr`, `gs://`, `az://`),
which zarr opens through obstore (`zarr.storage.ObjectStore`). A `StoreURL` has no
`__fspath__`, so code that would treat it as a file fails loudly instead of writing a local
folder named `s3:`; and a path that looks like a URL which lost its `//` on the way (what
`Path("s3://b/x")` makes) is refused.

Credentials and endpoints come only from the environment, as obstore reads them
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for an
S3-compatible server; `GOOGLE_*` and `AZURE_*` likewise). An `http://` endpoint is allowed
as such. Nothing here writes them anywhere, and no local cache is kept: reads are ranged GETs.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from extract.store.errors import StoreError

# URL scheme -> what obstore calls it; all three come with the one `s3` extra (obstore)
URL_SCHEMES = ("s3", "gs", "az")
INSTALL_HINT = "pip install 'diffprobe[s3]'"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
# a URL that went through Path() ("s3://b/x" -> "s3:/b/x") or lost its slashes: never a folder name
_MANGLED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(/|$)")
_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")


@dataclass(frozen=True)
class StoreURL:
    """A store on object storage: scheme, bucket (or container) and the key prefix inside it."""

    scheme: str
    bucket: str
    key: str = ""  # no leading or trailing slash

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else f"{self.scheme}://{self.bucket}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> StoreURL:
        return StoreURL(self.scheme, self.bucket, self.key.rpartition("/")[0])

    def __truediv__(self, name: str) -> StoreURL:
        name = str(name).strip("/")
        return StoreURL(self.scheme, self.bucket, f"{self.key}/{name}" if self.key else name)

    def with_name(self, name: str) -> StoreURL:
        return self.parent / name

    def __reduce__(self):
        # pickled (a SLURM job's plan) as its three fields: the client below is made again there
        return StoreURL, (self.scheme, self.bucket, self.key)

    @functools.cached_property
    def objects(self) -> Any:
        """The obstore store rooted at this URL's key (keys below are relative to it)."""
        return object_store(self)


Location = Path | StoreURL


def store_location(where: str | os.PathLike | StoreURL) -> Location:
    """A store's location as given (path, `file://`, `s3://`, `gs://`, `az://`): a Path or a
    StoreURL. Raises ValueError for an unknown scheme, a URL without a bucket or a path that is a
    URL with its `//` lost, and names the extra to install when obstore is missing."""
    if isinstance(where, StoreURL):
        return where
    text = os.fspath(where) if isinstance(where, os.PathLike) else str(where)
    match = _URL.match(text)
    if match is None:
        mangled = _MANGLED.match(text)
        if mangled:
            raise ValueError(
                f"{text!r} looks like a {mangled.group(1)}:// URL that lost its '//'; "
                "give the URL as scheme://bucket/path (it is never a local folder)"
            )
        return Path(text)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ValueError(f"{text}: a file:// URL names no host (file:///absolute/path)")
        return Path("/" + path)
    if scheme not in URL_SCHEMES:
        raise ValueError(
            f"{text}: unknown store scheme {scheme}://; use a path, file://, s3://, gs:// or az://"
        )
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{text}: no bucket (write {scheme}://bucket/path/name.zarr)")
    if importlib.util.find_spec("obstore") is None:
        raise ValueError(f"{text}: {scheme}:// stores need obstore: {INSTALL_HINT}")
    return StoreURL(scheme, bucket, key.strip("/"))


def is_url(where: str | os.PathLike | StoreURL) -> bool:
    return isinstance(store_location(where), StoreURL)


def _endpoint() -> str | None:
    return next((os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v)), None)


def object_store(url: StoreURL) -> Any:
    """An obstore store for the URL's bucket and prefix, configured from the environment. Retries
    are bounded, so an unreachable server fails in seconds rather than minutes."""
    from obstore.store import from_url

    client: dict[str, Any] = {"timeout": "60s", "connect_timeout": "5s"}
    if url.scheme == "s3" and (_endpoint() or "").startswith("http://"):
        client["allow_http"] = True
    retry = {"max_retries": 3, "retry_timeout": timedelta(seconds=20)}
    return from_url(str(url), client_options=client, retry_config=retry)


def zarr_store(where: Location, read_only: bool) -> Any:
    """What zarr opens: a folder's path, or obstore's store wrapped in zarr's ObjectStore."""
    if isinstance(where, Path):
        return str(where)
    import zarr.storage

    return zarr.storage.ObjectStore(where.objects, read_only=read_only)


def exists(where: Location) -> bool:
    """A folder or file at the path; any object under the URL's prefix."""
    if isinstance(where, Path):
        return where.exists()
    import obstore

    for batch in obstore.list(where.objects, chunk_size=1):
        if batch:
            return True
    return False


def list_objects(where: StoreURL) -> list[tuple[str, int]]:
    """(key relative to the URL, size) of every object under the URL's prefix."""
    import obstore

    return [(m["path"], int(m["size"])) for batch in obstore.list(where.objects) for m in batch]


def size_bytes(where: Location) -> int:
    if isinstance(where, Path):
        return sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
    return sum(size for _, size in list_objects(where))


def delete_tree(where: Location) -> None:
    """Delete a folder, or every object under a URL's prefix (callers check it is a store first)."""
    if isinstance(where, Path):
        import shutil

        shutil.rmtree(where)
        return
    import obstore

    keys = [key for key, _ in list_objects(where)]
    for i in range(0, len(keys), 1000):
        obstore.delete(where.objects, keys[i : i + 1000])


def delete_object(where: Location, key: str) -> None:
    """Delete one file or object of a store (by its key inside the store); absent is fine."""
    if isinstance(where, Path):
        where.joinpath(*key.split("/")).unlink(missing_ok=True)
        return
    import obstore

    obstore.delete(where.objects, key)


def is_storage_error(e: BaseException) -> bool:
    """An error raised by the object-storage client (obstore), whatever its class."""
    return type(e).__module__.split(".")[0] == "obstore"


_CODES = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied (these credentials may not do this here)",
    "InvalidAccessKeyId": "the credentials were refused (unknown access key)",
    "SignatureDoesNotMatch": "the credentials were refused (wrong secret key)",
    "ExpiredToken": "the credentials have expired",
}


def one_line(e: BaseException) -> str:
    """An object-storage client's error (a multi-line report with the server's XML) as one line
    saying what went wrong; any other error as it is."""
    text = str(e).strip()
    code = re.search(r"<Code>([^<]+)</Code>", text)
    bucket = re.search(r"<BucketName>([^<]+)</BucketName>", text)
    if code:
        what = _CODES.get(code.group(1), code.group(1))
        where = f"bucket {bucket.group(1)}: " if bucket else ""
        return f"object storage: {where}{what}"
    if is_storage_error(e) or "Error performing" in text:
        if re.search(r"connect|dns|timed out|error sending request", text, re.IGNORECASE):
            endpoint = _endpoint()
            return f"object storage: cannot reach {endpoint or 'the server'} (a network error)"
        first = text.splitlines()[0] if text else type(e).__name__
        return f"object storage: {first[:300]}"
    return str(e)


def storage_error(e: BaseException, where: Location) -> StoreError:
    """A storage client's error about a store as a StoreError of one line naming the store."""
    return StoreError(f"{where}: {one_line(e)}")


def require(where: Location) -> None:
    """Raise FileNotFoundError when no store (no root metadata) is at the location, a StoreError
    of one line when object storage cannot be asked (no bucket, refused credentials, network)."""
    if isinstance(where, Path):
        if not where.exists():
            raise FileNotFoundError(f"store not found: {where}")
        return
    import obstore

    try:  # a GET, not a HEAD: the object is tiny, and some servers' policies treat HEAD apart
        obstore.get(where.objects, "zarr.json").bytes()
    except FileNotFoundError as e:
        if "<Code>" in str(e):  # the bucket, not the object, is missing
            raise storage_error(e, where) from None
        raise FileNotFoundError(f"store not found: {where}") from None
    except Exception as e:
        if is_storage_error(e):
            raise storage_error(e, where) from None
        raise


def same_location(a: str | os.PathLike | StoreURL, b: str | os.PathLike | StoreURL) -> bool:
    """Whether two locations name the same store (local paths compared resolved)."""
    a, b = store_location(a), store_location(b)
    if isinstance(a, Path) and isinstance(b, Path):
        return a.resolve() == b.resolve()
    return str(a) == str(b)


def read_text(where: Location) -> str | None:
    """A small file's or object's text (a record beside stores); None when it is not there."""
    if isinstance(where, Path):
        return where.read_text() if where.is_file() else None
    import obstore

    try:
        return bytes(obstore.get(where.parent.objects, where.name).bytes()).decode()
    except FileNotFoundError as e:
        if "<Code>NoSuchKey" not in str(e) and "<Code>" in str(e):
            raise storage_error(e, where) from None
        return None


def write_text(where: Location, text: str) -> None:
    """Write a small file (making its folder) or put a small object."""
    if isinstance(where, Path):
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(text)
        return
    import obstore

    obstore.put(where.parent.objects, where.name, text.encode())
