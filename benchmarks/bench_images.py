"""Image service: PullImage cold and warm, ImageStatus, ListImages with many images, RemoveImage.

    python -m benchmarks.bench_images [--count 20] [--images 100] [--list-count 500]
                                      [--containerd unix:///run/containerd-ref/containerd.sock]

Needs the local registries of ../shared/tools/test-registry.sh (``seed``): both runtimes pull
registry.k8s.io and gcr.io images through their mirrors on 127.0.0.1:5000-5003, pycri with the
registries.conf that ``test-registry.sh registries-conf`` prints.

- ``PullImage <name> cold``: the image is removed, and gone from ListImages, before each pull.
  ``RemoveImage <name>`` times those removals.
- ``PullImage <name> warm``: the image is present; the pull resolves the tag again.
- ``--images`` tiny distinct one-layer images are pushed to the gcr.io mirror
  (127.0.0.1:5002, repositories ``pycri-bench/img-<n>``; they stay there, pushing again is a
  no-op) and pulled into each runtime as ``gcr.io/pycri-bench/img-<n>:latest``; with all of
  them present ListImages and ImageStatus are timed, then they are removed one by one.

Every image a suite pulls is removed at its end, also on errors and Ctrl-C; an image the
runtime had before is pulled back instead.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import (
    BenchDaemon,
    Result,
    answers,
    containerd_endpoint,
    exit_on_sigterm,
    measure,
    report,
    summary,
    timed,
    unless_unimplemented,
)
from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError, NotFoundError
from tests.support.images import RegistryClient, host_arch, push, sha256_digest, simple_image

IMAGES = {
    "nginx": "registry.k8s.io/e2e-test-images/nginx:1.14-2",  # busybox base layer + nginx layer
    "busybox": "registry.k8s.io/e2e-test-images/busybox:1.29-2",
}
GCR_MIRROR = "http://127.0.0.1:5002"  # test-registry.sh's mirror of gcr.io
TEST_REGISTRY_SH = Path(__file__).resolve().parents[2] / "shared" / "tools" / "test-registry.sh"
MIRRORS = {"registry.k8s.io": 5000, "k8s.gcr.io": 5001, "gcr.io": 5002, "public.ecr.aws": 5003}
PULL_TIMEOUT = 120.0


def tiny_repo(n: int) -> str:
    return f"pycri-bench/img-{n}"


def tiny_ref(n: int) -> str:
    return f"gcr.io/{tiny_repo(n)}:latest"


def push_tiny_images(count: int) -> None:
    """``count`` distinct one-file images into the gcr.io mirror (idempotent: same bytes, same digests)."""
    for n in range(count):
        image = simple_image({"pycri-bench": f"pycri benchmark image {n}\n".encode()}, cmd=["/pycri-bench"])
        push(GCR_MIRROR, tiny_repo(n), "latest", image)


def registries_conf() -> str:
    """The registries.conf of the local mirrors: test-registry.sh's, or the same written here."""
    if TEST_REGISTRY_SH.exists():
        out = subprocess.run(["bash", str(TEST_REGISTRY_SH), "registries-conf"], capture_output=True, text=True)
        if out.returncode == 0 and "[[registry]]" in out.stdout:
            return out.stdout
    return "".join(
        f'[[registry]]\nlocation = "{host}"\n\n[[registry.mirror]]\nlocation = "127.0.0.1:{port}"\ninsecure = true\n\n'
        for host, port in MIRRORS.items()
    )


def image_blobs(ref: str) -> set[str]:
    """Digests of what pulling ``ref`` for this machine fetches (index, manifest, config, layers),
    read from its local mirror."""
    host, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    with RegistryClient(f"http://127.0.0.1:{MIRRORS[host]}") as registry:
        response = registry.get_manifest(repository, tag)
        response.raise_for_status()
        digests = {sha256_digest(response.content)}
        manifest = response.json()
        if "manifests" in manifest:  # an index: follow this platform's manifest
            chosen = next(m for m in manifest["manifests"] if m.get("platform", {}).get("architecture") == host_arch())
            response = registry.get_manifest(repository, chosen["digest"])
            response.raise_for_status()
            digests.add(chosen["digest"])
            manifest = response.json()
    return digests | {manifest["config"]["digest"]} | {layer["digest"] for layer in manifest["layers"]}


def content_blobs(endpoint: str) -> set[str] | None:
    """Digests in containerd's content store (k8s.io namespace) through ``ctr``, or None if that is not possible."""
    ctr = shutil.which("ctr")
    if ctr is None or not endpoint.startswith("unix://"):
        return None
    out = subprocess.run(
        [ctr, "-a", endpoint.removeprefix("unix://"), "-n", "k8s.io", "content", "ls", "-q"], capture_output=True
    )
    return set(out.stdout.decode().split()) if out.returncode == 0 else None


class ImageSuite:
    def __init__(self, label: str, client: Client, args: argparse.Namespace, containerd: str | None = None) -> None:
        self.label = label
        self.client = client
        self.args = args
        self.containerd = containerd  # the endpoint, when this is containerd (to look at its content store)
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.before = self.tags()  # what the runtime held before: restored at the end
        self.touched: set[str] = set()  # every reference this suite pulled or removed

    # helpers ---------------------------------------------------------------------------------

    def tags(self) -> set[str]:
        return {tag for image in self.client.list_images(api.ListImagesRequest()).images for tag in image.repo_tags}

    def pull(self, ref: str) -> None:
        self.touched.add(ref)
        self.client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=ref)), timeout=PULL_TIMEOUT)

    def remove(self, ref: str) -> None:
        self.touched.add(ref)
        with contextlib.suppress(NotFoundError):  # removal is idempotent in CRI; tolerate runtimes that say NotFound
            self.client.remove_image(api.RemoveImageRequest(image=api.ImageSpec(image=ref)))

    def wait_gone(self, ref: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while ref in self.tags():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: {ref} still listed {timeout}s after RemoveImage")
            time.sleep(0.01)

    def note_cached_blobs(self, short: str, ref: str) -> None:
        """How cold containerd's cold pulls are: which of the image's blobs its content store still
        holds after RemoveImage (kept by other images sharing them, or not yet collected)."""
        assert self.containerd
        present = content_blobs(self.containerd)
        if present is None:
            return
        try:
            wanted = image_blobs(ref)
        except Exception as exc:  # only a note: the benchmark goes on without it
            self.notes.append(f"could not resolve the blobs of {ref} from its mirror: {exc}")
            return
        cached = len(wanted & present)
        self.notes.append(
            f"containerd held {cached} of the {len(wanted)} blobs of {short} (index, manifest, config, layers) "
            f"after RemoveImage" + (": its cold pulls fetch everything" if not cached else ", shared with images it held already")
        )

    def add(self, name: str, samples: list[float]) -> None:
        if samples:
            self.results.append(Result(name, samples))

    def stage(self, name: str, fn: Callable[[], object]) -> None:
        unless_unimplemented(self.label, name, fn)

    # stages ----------------------------------------------------------------------------------

    def many_images(self) -> None:
        n = self.args.images
        refs = [tiny_ref(i) for i in range(n)]
        pulls = [timed(functools.partial(self.pull, ref)) for ref in refs]
        self.add(f"PullImage tiny x{n}", pulls)
        missing = set(refs) - self.tags()
        if missing:
            raise RuntimeError(f"{self.label}: {len(missing)} pulled images are not listed, e.g. {min(missing)}")
        listing = api.ListImagesRequest()
        self.results.append(
            measure(f"ListImages ({n} images)", lambda: self.client.list_images(listing), self.args.list_count, 20)
        )
        status = api.ImageStatusRequest(image=api.ImageSpec(image=refs[n // 2]))
        self.results.append(
            measure(f"ImageStatus ({n} images)", lambda: self.client.image_status(status), self.args.list_count, 20)
        )
        self.add(f"RemoveImage tiny x{n}", [timed(functools.partial(self.remove, ref)) for ref in refs])

    def image(self, short: str, ref: str) -> None:
        self.remove(ref)
        self.wait_gone(ref)
        if self.containerd:
            self.note_cached_blobs(short, ref)
        cold: list[float] = []
        removals: list[float] = []
        for _ in range(self.args.count):
            cold.append(timed(lambda: self.pull(ref)))
            removals.append(timed(lambda: self.remove(ref)))
            self.wait_gone(ref)
        self.add(f"PullImage {short} cold", cold)
        self.add(f"RemoveImage {short}", removals)
        self.pull(ref)
        self.add(f"PullImage {short} warm", [timed(lambda: self.pull(ref)) for _ in range(self.args.count)])
        status = api.ImageStatusRequest(image=api.ImageSpec(image=ref))
        self.results.append(measure(f"ImageStatus {short}", lambda: self.client.image_status(status), self.args.list_count, 20))
        self.remove(ref)

    def run(self) -> list[Result]:
        try:
            if self.args.images:
                self.stage("ListImages with many images", self.many_images)
            for short, ref in IMAGES.items():
                self.stage(f"{short} pulls", functools.partial(self.image, short, ref))
        finally:
            self.cleanup()
        return self.results

    def cleanup(self) -> None:
        """Leave the runtime as found: remove what this suite pulled, pull back what it removed."""
        failures = []
        for ref in sorted(self.touched):
            try:
                if ref in self.before:
                    self.pull(ref)
                else:
                    self.remove(ref)
            except ClientError as exc:
                failures.append(f"{ref}: {exc}")
        left = (self.tags() - self.before) & self.touched
        if failures or left:
            print(f"{self.label}: cleanup failed; left behind: {sorted(left)}; errors: {failures}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20, help="cold and warm pulls per image")
    parser.add_argument("--images", type=int, default=100, help="tiny images present while ListImages is timed")
    parser.add_argument("--list-count", type=int, default=500, help="ListImages and ImageStatus calls")
    parser.add_argument("--containerd", help="containerd CRI endpoint to compare with")
    parser.add_argument("--log-level", default="info", help="pycri daemon log level (debug logs every RPC's time)")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the pycri daemon's log there at the end")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    start = time.monotonic()
    try:
        push_tiny_images(args.images)
    except Exception as exc:
        print(f"cannot push to the gcr.io mirror {GCR_MIRROR} ({exc}); run ../shared/tools/test-registry.sh seed")
        return 1
    print(f"pushed {args.images} tiny images to {GCR_MIRROR} in {time.monotonic() - start:.1f}s")

    fd, conf = tempfile.mkstemp(prefix="pycri-bench-registries-", suffix=".conf")
    os.write(fd, registries_conf().encode())
    os.close(fd)
    try:
        daemon = BenchDaemon.temporary(images={"registries_conf": conf})
        daemon.log_level = args.log_level
        with daemon:
            try:
                with Client(daemon.socket, timeout=30) as client:
                    ours_suite = ImageSuite("pycri", client, args)
                    ours = ours_suite.run()
            finally:
                if args.keep_log:
                    shutil.copy(daemon.log_path, args.keep_log)
    finally:
        os.unlink(conf)

    endpoint = containerd_endpoint(args.containerd)
    theirs: list[Result] | None = None
    notes = ours_suite.notes
    if endpoint:
        with Client(endpoint, timeout=30) as client:
            if answers(client, endpoint):
                suite = ImageSuite("containerd", client, args, containerd=endpoint)
                theirs = suite.run()
                notes += suite.notes

    print(f"{args.count} cold and {args.count} warm pulls per image, {args.list_count} ListImages/ImageStatus calls;")
    print("blocking Python gRPC client over a unix socket; registries on 127.0.0.1 (plain HTTP)")
    print(report(ours, theirs))
    if theirs is not None:
        print("note: for containerd a cold pull may find content still cached after RemoveImage (its GC decides)")
    for note in notes:
        print(f"note: {note}")
    print(summary(ours, theirs))
    print(f"total {time.monotonic() - start:.0f}s")
    return 0


def interrupted() -> int:
    print("interrupted; cleanup done (any pod or image it could not remove is named above)")
    return 130


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(interrupted()) from None
