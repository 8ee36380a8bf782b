"""A Git server on 127.0.0.1 over smart HTTP: git's own `git http-backend`, run as a CGI
program by a small threaded HTTP server. Read-only (upload-pack): Flux fetches from it;
the tests and the demo commit to the bare repositories under ROOT directly.

    python hack/cluster/gitserver.py --root DIR --port PORT

Serves DIR/NAME.git at http://127.0.0.1:PORT/NAME.git.
"""

from __future__ import annotations

import argparse
import http.server
import os
import subprocess
import sys
from pathlib import Path


def handler(root: Path) -> type[http.server.BaseHTTPRequestHandler]:
    class GitHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._cgi()

        def do_POST(self) -> None:
            self._cgi()

        def _cgi(self) -> None:
            path, _, query = self.path.partition("?")
            if "/git-receive-pack" in path or "service=git-receive-pack" in query:
                self.send_error(403, "read-only: push to the bare repository on disk")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            out = subprocess.run(
                ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
            ).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = out.partition(b"\n\n")
            status, headers = 200, []
            for line in head.decode(errors="replace").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return GitHandler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gitserver", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the bare repositories")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler(args.root.resolve()))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
