"""``pycri pull``, ``pycri images`` and ``pycri import``.

pycri pull IMAGE [--creds USER:PASSWORD]   pull with a progress bar per layer (Admin PullImage)
pycri images                               the image store as a table (CRI ListImages)
pycri import FILE                          OCI layout / docker-archive, tar or directory (Admin ImportImages)

``pull`` and ``import`` speak pycri's own ``pycri.admin.v1.Admin`` service, which only a
pycri daemon serves on its main socket; ``images`` works against any CRI runtime. The
archive ``import`` names is read by the daemon, so it must be on the daemon's host.
``pull`` and ``import`` wait as long as the daemon works unless ``--timeout`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from pycri.api import admin_pb2 as admin
from pycri.api import admin_pb2_grpc
from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError, UnimplementedError
from pycri.client.common import CHANNEL_OPTIONS, target
from pycri.client.errors import from_rpc_error

Command = Callable[[argparse.Namespace, Console], int]
AddCommand = Callable[[str, str, Command], argparse.ArgumentParser]
SocketOf = Callable[[argparse.Namespace], str]

SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float) -> str:
    """Decimal units with three significant digits, as crictl and docker print sizes: ``4.26MB``."""
    unit = 0
    while size >= 1000 and unit < len(SIZE_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.3g}{SIZE_UNITS[unit]}"


def short_id(image_id: str) -> str:
    """The first 13 hex digits of an ID or digest, as crictl shows them."""
    return image_id.partition(":")[2][:13] if ":" in image_id else image_id[:13]


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def admin_stub(socket: str, method: str) -> Iterator[admin_pb2_grpc.AdminStub]:
    """A stub of the daemon's Admin service; gRPC failures become ClientErrors naming ``method``."""
    with grpc.insecure_channel(target(socket), options=CHANNEL_OPTIONS) as channel:
        try:
            yield admin_pb2_grpc.AdminStub(channel)
        except grpc.RpcError as exc:
            error = from_rpc_error(method, exc)
            if isinstance(error, UnimplementedError):
                detail = f"{error.details} (this daemon does not serve pycri.admin.v1.Admin: not pycri, or an older one)"
                raise UnimplementedError(method, error.code, detail) from None
            raise error from None


def _credentials(text: str | None) -> tuple[str, str]:
    if not text:
        return "", ""
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise ValueError("--creds must be USER:PASSWORD")
    return username, password


def pull(socket_of: SocketOf) -> Command:
    def cmd_pull(args: argparse.Namespace, console: Console) -> int:
        try:
            username, password = _credentials(args.creds)
        except ValueError as exc:
            print(f"pycri: {exc}", file=sys.stderr)
            return 2
        request = admin.PullImageRequest(image=args.image, username=username, password=password)
        try:
            with admin_stub(socket_of(args), "PullImage") as stub:
                stream = stub.PullImage(request, timeout=args.timeout)
                if args.json:
                    image_id = next((m.image_id for m in stream if m.done), "")
                else:
                    image_id = _show_progress(stream, Console(stderr=True, highlight=False))
        except KeyboardInterrupt:  # closing the channel cancels the call, and the daemon stops the pull
            print("pycri: pull interrupted", file=sys.stderr)
            return 130
        if not image_id:
            raise ClientError("PullImage", grpc.StatusCode.UNKNOWN, "the daemon ended the pull without an image ID")
        if args.json:
            _print_json({"id": image_id})
        else:
            console.print(image_id, highlight=False)
        return 0

    return cmd_pull


def _show_progress(stream: Iterable[admin.PullProgress], console: Console) -> str:
    """Draw a bar per blob as the stream tells; the image ID of its final message."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with contextlib.ExitStack() as stack:
        progress: Progress | None = None  # started on the first message: a failed pull draws nothing
        tasks: dict[str, TaskID] = {}
        for message in stream:
            if message.done:
                return message.image_id
            if progress is None:
                progress = stack.enter_context(Progress(*columns, console=console))
            task = tasks.get(message.digest)
            if task is None:
                description = f"{message.kind or 'blob':<8} {short_id(message.digest)}"
                task = tasks[message.digest] = progress.add_task(description, total=message.total_bytes or None)
            progress.update(task, completed=message.done_bytes, total=message.total_bytes or None)
    return ""


def images(socket_of: SocketOf) -> Command:
    def cmd_images(args: argparse.Namespace, console: Console) -> int:
        with Client(socket_of(args), timeout=args.timeout) as client:
            response = client.list_images(api.ListImagesRequest())
        if args.json:
            doc = json_format.MessageToDict(response, preserving_proto_field_name=True)
            doc.setdefault("images", [])
            _print_json(doc)
            return 0
        rows = [("REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "SIZE")]
        rows += [row for image in response.images for row in image_rows(image)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            line = "   ".join([cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]])
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return 0

    return cmd_images


def image_rows(image: api.Image) -> list[tuple[str, str, str, str, str]]:
    """One row per tag (one ``<none>`` row for an untagged image), as ``crictl images`` shows them."""
    digests = {d.partition("@")[0]: d.partition("@")[2] for d in reversed(image.repo_digests)}
    size = human_size(image.size)
    if not image.repo_tags:
        repo, _, digest = image.repo_digests[0].partition("@") if image.repo_digests else ("<none>", "", "")
        return [(repo, "<none>", short_id(digest) if digest else "<none>", short_id(image.id), size)]
    rows = []
    for tagged in image.repo_tags:
        repo, _, tag = tagged.rpartition(":")
        digest = digests.get(repo, "")
        rows.append((repo, tag, short_id(digest) if digest else "<none>", short_id(image.id), size))
    return rows


def import_(socket_of: SocketOf) -> Command:
    def cmd_import(args: argparse.Namespace, console: Console) -> int:
        path = Path(args.file).absolute()  # the daemon resolves no relative paths (nor symlinks for us)
        with admin_stub(socket_of(args), "ImportImages") as stub:
            response = stub.ImportImages(admin.ImportRequest(path=str(path)), timeout=args.timeout)
        if args.json:
            _print_json([{"id": i.id, "repo_tags": list(i.repo_tags)} for i in response.images])
            return 0
        for image in response.images:
            if image.repo_tags:
                for tag in image.repo_tags:
                    console.print(f"Imported {tag} ({image.id})", markup=False, highlight=False, soft_wrap=True)
            else:
                console.print(f"Imported untagged image {image.id}", markup=False, highlight=False, soft_wrap=True)
        return 0

    return cmd_import


def register(add: AddCommand, socket_of: SocketOf) -> None:
    """Add ``pull``, ``images`` and ``import`` with ``add`` (main's client_command: --socket, --json, --timeout)."""
    p = add("pull", "pull an image, showing each layer's progress", pull(socket_of))
    p.add_argument("image", help="image reference, e.g. busybox or registry.example.com/app:1.2")
    p.add_argument("--creds", metavar="USER:PASSWORD", help="registry credentials")
    p.set_defaults(timeout=None)  # a pull takes as long as it takes unless --timeout says otherwise
    add("images", "list the images in the store", images(socket_of))
    p = add("import", "import images from an OCI layout or docker-archive (tar file or directory)", import_(socket_of))
    p.add_argument("file", help="the archive (tar, optionally compressed) or directory, on the daemon's host")
    p.set_defaults(timeout=None)
