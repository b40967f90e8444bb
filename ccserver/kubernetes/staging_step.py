"""The staging steps of a TES task's pod: ``python3 -c SOURCE in|out`` in the cluster's
``staging_image``.  Standard library only; it runs in the pod, never in the daemon.

``in``: reads the list of input streams from ``$CCSERVER_STAGING_URL/inputs``, then each
stream piece by piece (``/inputs/I?offset=N``), and unpacks it into the task's volumes.
``out``: packs each path of ``$CCSERVER_OUTPUT_PATHS`` (a JSON list) into a tar stream (symbolic
links at the top followed, hard links stored as files) and sends it piece by piece
(``POST /outputs/I?offset=N``; the last piece says whether the path is a directory and its
name, or that it does not exist).  See :mod:`ccserver.tes.kube_staging` for the daemon's side.

A refused request (4xx) ends the step at once with its answer on stderr; a connection that
fails, or a 5xx, is tried again a few times.
"""

import json
import os
import posixpath
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request

BASE = os.environ.get("CCSERVER_STAGING_URL", "")
PIECE = int(os.environ.get("CCSERVER_PIECE_BYTES", str(4 * 1024 * 1024)))
TIMEOUT = 120
TRIES = 6


def request(path, data=None):
    url = BASE + path
    for attempt in range(TRIES):
        try:
            req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
            if data is not None:
                req.add_header("Content-Type", "application/octet-stream")
            with urllib.request.urlopen(req, timeout=TIMEOUT) as answer:
                return answer.read()
        except urllib.error.HTTPError as e:
            text = e.read()[:2000].decode("utf-8", "replace")
            if e.code < 500 or attempt + 1 == TRIES:
                sys.exit(f"ccserver answered {e.code} to {path.split('?')[0]}: {text}")
        except OSError as e:
            if attempt + 1 == TRIES:
                sys.exit(f"cannot reach ccserver for {path.split('?')[0]}: {e}")
        time.sleep(min(2**attempt, 10))
    return b""


class Pieces:
    """An input stream read piece by piece (a file object for tarfile)."""

    def __init__(self, index, size):
        self.index, self.size, self.offset, self.buffer = index, size, 0, b""

    def read(self, n=-1):
        while (n < 0 or len(self.buffer) < n) and self.offset < self.size:
            piece = request(f"/inputs/{self.index}?offset={self.offset}")
            if not piece:
                sys.exit(f"input stream {self.index} ended early at {self.offset} of {self.size} bytes")
            self.offset += len(piece)
            self.buffer += piece
        if n < 0:
            n = len(self.buffer)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


class Sender:
    """An output stream sent piece by piece (a file object tarfile writes to)."""

    def __init__(self, index):
        self.index, self.offset, self.buffer = index, 0, bytearray()

    def write(self, data):
        self.buffer += data
        while len(self.buffer) >= PIECE:
            self._send(bytes(self.buffer[:PIECE]))
            del self.buffer[:PIECE]
        return len(data)

    def _send(self, piece, last=""):
        request(f"/outputs/{self.index}?offset={self.offset}{last}", piece)
        self.offset += len(piece)

    def finish(self, is_dir, name):
        query = urllib.parse.urlencode({"last": "1", "dir": "1" if is_dir else "0", "name": name})
        self._send(bytes(self.buffer), "&" + query)


class Files(tarfile.TarFile):
    """Hard links are stored as files: the daemon reads each member on its own."""

    def gettarinfo(self, name=None, arcname=None, fileobj=None):
        self.inodes.clear()
        return super().gettarinfo(name, arcname, fileobj)


def stage_in():
    for index, entry in enumerate(json.loads(request("/inputs"))):
        with tarfile.open(fileobj=Pieces(index, int(entry["size"])), mode="r|") as tar:
            if hasattr(tarfile, "fully_trusted_filter"):
                tar.extraction_filter = tarfile.fully_trusted_filter  # the daemon's own streams
            tar.extractall(entry["dir"], numeric_owner=True)
        print(f"input stream {index}: {entry['size']} bytes unpacked")


def stage_out():
    for index, path in enumerate(json.loads(os.environ.get("CCSERVER_OUTPUT_PATHS", "[]"))):
        real = os.path.realpath(path)
        if not os.path.exists(real):
            request(f"/outputs/{index}?offset=0&last=1&missing=1", b"")
            print(f"output {path}: does not exist")
            continue
        sender = Sender(index)
        name = posixpath.basename(path.rstrip("/")) or "/"
        with Files.open(fileobj=sender, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(real, arcname=name)
        sender.finish(os.path.isdir(real), name)
        print(f"output {path}: {sender.offset} bytes sent")


if __name__ == "__main__":
    {"in": stage_in, "out": stage_out}[sys.argv[1]]()
