"""A Hub-compatible server on loopback, for testing the real `huggingface_hub` client without the Hub.

It implements what `HfApi` (push), `hf_hub_download` / `HfFileSystem` (transformers, datasets) call, with the Hub's
status codes and `X-Error-Code` headers, so the client raises the same exceptions it would against the Hub:

- `GET /api/whoami-v2`, `POST /api/validate-yaml`, `POST /api/repos/create`;
- `GET /api/{type}s/{repo}[/revision/{rev}]` (repo info), `.../tree/{rev}[/{path}]`, `POST .../paths-info/{rev}`,
  `GET .../refs`, `GET .../commits/{rev}`, `POST .../branch/{name}`;
- `POST .../preupload/{rev}` (regular or LFS, from the repo's `.gitattributes`, binary content and size);
- `POST /{prefix}{repo}.git/info/lfs/objects/batch` (basic transfer), a presigned-style `PUT` and a verify step;
- `POST .../commit/{rev}` (NDJSON: header, file, lfsFile, deletedFile, deletedFolder);
- `HEAD`/`GET /{prefix}{repo}/resolve/{rev}/{path}` with `ETag`, `X-Linked-Etag`, `X-Linked-Size`,
  `X-Repo-Commit` and byte ranges.

Tokens map to users; private repos are invisible without the owner's token; every write needs a valid token. Every
request is recorded (method, path, whether it carried a valid token) for assertions. Run it by hand with
`python tests/hub_server.py --port 8999 --token hf_test`.
"""

import base64
import datetime
import fnmatch
import hashlib
import json
import re
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
SPACE_SDKS = {"gradio", "docker", "static", "streamlit"}
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
# The Hub's default .gitattributes (abridged): binary formats go to LFS.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.safetensors",
        "*.bin",
        "*.pt",
        "*.pth",
        "*.ckpt",
        "*.gguf",
        "*.onnx",
        "*.arrow",
        "*.parquet",
        "*.png",
        "*.jpg",
        "*.jpeg",
        "*.webp",
        "*.zip",
        "*.tar.gz",
    )
)


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


@dataclass
class Blob:
    """A file in a commit: its bytes (regular files) or its LFS object id."""

    size: int
    content: bytes | None = None
    lfs_oid: str | None = None

    @property
    def git_oid(self) -> str:
        return git_blob_sha(self.content if self.lfs_oid is None else lfs_pointer(self.lfs_oid, self.size))


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    type: str
    id: str
    owner: str
    private: bool
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    created: str = ""

    def resolve(self, revision: str) -> Commit | None:
        revision = urllib.parse.unquote(revision)
        oid = self.branches.get(revision, revision if revision in self.commits else None)
        return self.commits.get(oid) if oid else None

    def lfs_patterns(self, commit: Commit) -> list[str]:
        attributes = commit.files.get(".gitattributes")
        text = attributes.content.decode() if attributes is not None and attributes.content else ""
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubState:
    """Repos, LFS objects, users and the request log, shared by the handler threads."""

    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens  # token -> user name
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.upload_tickets: dict[str, tuple[str, int]] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.RLock()

    def new_commit(self, repo: Repo, branch: str, title: str, message: str, author: str, files: dict[str, Blob]):
        parent = repo.branches.get(branch)
        oid = hashlib.sha1(f"{repo.id}{branch}{title}{secrets.token_hex(8)}".encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, title, message, author, _now(), files)
        repo.branches[branch] = oid
        return repo.commits[oid]


class Handler(BaseHTTPRequestHandler):
    server: "HubServer"
    protocol_version = "HTTP/1.1"

    # -- plumbing -------------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # the request log replaces stderr noise
        pass

    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def base(self) -> str:
        return self.server.url

    def _user(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.state.tokens.get(header[len("Bearer ") :])
        return None

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        params = urllib.parse.parse_qs(query)
        user = self._user()
        with self.state.lock:
            self.state.requests.append(
                {"method": method, "path": path, "user": user, "auth": "Authorization" in self.headers}
            )
        try:
            for pattern, methods, handler in ROUTES:
                match = re.fullmatch(pattern, path)
                if match and method in methods:
                    handler(self, method, match, params, user)
                    return
            raise HubError(404, f"no route for {method} {path}")
        except HubError as error:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            body = json.dumps({"error": error.message}).encode()
            self._send(error.status, body, {"Content-Type": "application/json", **headers}, head=method == "HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- repos ----------------------------------------------------------------------------------------------------
    def _repo(self, repo_type: str, repo_id: str, user: str | None, write: bool = False) -> Repo:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo.owner):
            raise HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        if write and user != repo.owner:
            raise HubError(403, "You don't have the rights to write to this repository")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {urllib.parse.unquote(revision)}", "RevisionNotFound")
        return commit

    def whoami(self, method, match, params, user) -> None:
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        self._json(
            200,
            {
                "type": "user",
                "id": hashlib.md5(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.title(),
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
            },
        )

    def validate_yaml(self, method, match, params, user) -> None:
        payload = json.loads(self._body())
        errors = validate_card(payload.get("content", ""), payload.get("repoType", "model"))
        if errors:
            self._json(400, {"errors": [{"message": message} for message in errors], "warnings": []})
        else:
            self._json(200, {"errors": [], "warnings": []})

    def create_repo(self, method, match, params, user) -> None:
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        payload = json.loads(self._body())
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")
        if repo_type == "space" and payload.get("sdk") not in SPACE_SDKS:
            raise HubError(400, f"Invalid sdk {payload.get('sdk')!r}")
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.base}/{URL_PREFIXES[repo_type]}{repo_id}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                # The Hub names the existing repo's URL in its 409, and the client reads it (`exist_ok=True`).
                self._json(409, {"error": "You already created this repo", "url": url})
                return
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_type, repo_id, user, private, payload.get("sdk"), created=_now())
            attributes = GITATTRIBUTES.encode()
            self.state.new_commit(
                repo, "main", "initial commit", "", user, {".gitattributes": Blob(len(attributes), attributes)}
            )
            self.state.repos[(repo_type, repo_id)] = repo
        self._json(200, {"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()[:24]})

    def repo_info(self, method, match, params, user) -> None:
        repo_type, repo_id, revision = REPO_TYPES[match["type"]], match["repo"], match["rev"] or "main"
        repo = self._repo(repo_type, repo_id, user)
        commit = self._commit(repo, revision)
        info: dict[str, Any] = {
            "id": repo_id,
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "author": repo.owner,
            "sha": commit.oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "createdAt": repo.created,
            "lastModified": commit.date,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        readme = commit.files.get("README.md")
        if readme is not None:
            card = card_metadata(self._read(readme).decode())
            info["cardData"] = card
            if repo_type == "model":
                info["pipeline_tag"] = card.get("pipeline_tag")
                info["library_name"] = card.get("library_name")
                info["tags"] = list(card.get("tags") or [])
        if repo_type == "space":
            info["sdk"] = repo.sdk
            info["runtime"] = {"stage": "BUILDING", "hardware": {"current": None, "requested": "cpu-basic"}}
        self._json(200, info)

    def refs(self, method, match, params, user) -> None:
        repo = self._repo(REPO_TYPES[match["type"]], match["repo"], user)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in sorted(repo.branches.items())]
        self._json(200, {"branches": branches, "tags": [], "converts": []})

    def commits(self, method, match, params, user) -> None:
        repo = self._repo(REPO_TYPES[match["type"]], match["repo"], user)
        commit: Commit | None = self._commit(repo, match["rev"])
        history = []
        while commit is not None:
            history.append(
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": commit.author}],
                    "date": commit.date,
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(200, history)

    def create_branch(self, method, match, params, user) -> None:
        repo = self._repo(REPO_TYPES[match["type"]], match["repo"], user, write=True)
        branch = urllib.parse.unquote(match["branch"])
        body = self._body()
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        with self.state.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = self._commit(repo, start).oid
        self._json(200, {})

    # -- files ----------------------------------------------------------------------------------------------------
    def _read(self, blob: Blob) -> bytes:
        return blob.content if blob.lfs_oid is None else self.state.lfs[blob.lfs_oid]

    def _entry(self, path: str, blob: Blob) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
        if blob.lfs_oid is not None:
            pointer = lfs_pointer(blob.lfs_oid, blob.size)
            entry["lfs"] = {"oid": blob.lfs_oid, "size": blob.size, "pointerSize": len(pointer)}
        return entry

    def _folder(self, path: str) -> dict[str, Any]:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    def tree(self, method, match, params, user) -> None:
        repo = self._repo(REPO_TYPES[match["type"]], match["repo"], user)
        commit = self._commit(repo, match["rev"])
        root = urllib.parse.unquote(match["path"] or "").strip("/")
        recursive = params.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{root}/" if root else ""
        if root and root not in commit.files and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"{root} does not exist on {match['rev']}", "EntryNotFound")
        entries, folders = [], set()
        for path, blob in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append(self._entry(path, blob))
        self._json(200, [self._folder(f) for f in sorted(folders)] + entries)

    def paths_info(self, method, match, params, user) -> None:
        repo = self._repo(REPO_TYPES[match["type"]], match["repo"], user)
        commit = self._commit(repo, match["rev"])
        body = self._body().decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body).get("paths", [])
        else:
            paths = urllib.parse.parse_qs(body).get("paths", [])
        result = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                result.append(self._entry(path, commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files):
                result.append(self._folder(path))
        self._json(200, result)

    def resolve(self, method, match, params, user) -> None:
        repo_type = REPO_TYPES.get((match["prefix"] or "").rstrip("/") or "models", "model")
        repo = self._repo(repo_type, match["repo"], user)
        commit = self._commit(repo, match["rev"])
        path = urllib.parse.unquote(match["path"])
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"{path} does not exist on {match['rev']}", "EntryNotFound")
        content = self._read(blob)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if blob.lfs_oid is not None:
            headers |= {"X-Linked-Etag": f'"{blob.lfs_oid}"', "X-Linked-Size": str(blob.size)}
            headers["ETag"] = f'"{blob.lfs_oid}"'
        else:
            headers["ETag"] = f'"{blob.git_oid}"'
        status, ranged = 200, re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if ranged and content:
            start = int(ranged[1]) if ranged[1] else max(0, len(content) - int(ranged[2]))
            end = int(ranged[2]) if ranged[1] and ranged[2] else len(content) - 1
            if start >= len(content):
                self._send(416, b"", {"Content-Range": f"bytes */{len(content)}"}, head=method == "HEAD")
                return
            end = min(end, len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        self._send(status, content, headers, head=method == "HEAD")

    # -- uploads --------------------------------------------------------------------------------------------------
    def preupload(self, method, match, params, user) -> None:
        repo = self._repo(REPO_TYPES[match["type"]], match["repo"], user, write=True)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        commit = self._commit(repo, match["rev"])
        patterns = repo.lfs_patterns(commit)
        files = []
        for file in json.loads(self._body())["files"]:
            sample = base64.b64decode(file["sample"])
            name = file["path"].rsplit("/", 1)[-1]
            lfs = (
                file["size"] >= LFS_SIZE_THRESHOLD
                or b"\x00" in sample
                or any(fnmatch.fnmatch(name, p) for p in patterns)
            )
            existing = commit.files.get(file["path"])
            oid = None
            if existing is not None:
                oid = existing.lfs_oid if existing.lfs_oid is not None else existing.git_oid
            files.append(
                {"path": file["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._json(200, {"files": files, "commitOid": commit.oid})

    def lfs_batch(self, method, match, params, user) -> None:
        repo_type = REPO_TYPES.get((match["prefix"] or "").rstrip("/") or "models", "model")
        self._repo(repo_type, match["repo"], user, write=True)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        payload = json.loads(self._body())
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "only basic uploads are supported here")
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.lfs:
                ticket = secrets.token_urlsafe(16)
                with self.state.lock:
                    self.state.upload_tickets[ticket] = (obj["oid"], obj["size"])
                entry["actions"] = {
                    "upload": {"href": f"{self.base}/lfs-upload/{ticket}", "expires_in": 3600},
                    "verify": {"href": f"{self.base}/lfs-verify", "header": {}},
                }
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, method, match, params, user) -> None:
        # Like a presigned S3 URL: the ticket authorises the PUT, no Authorization header is sent.
        with self.state.lock:
            ticket = self.state.upload_tickets.pop(match["ticket"], None)
        if ticket is None:
            raise HubError(403, "unknown or used upload ticket")
        body = self._body()
        oid, size = ticket
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match oid {oid} / size {size}")
        with self.state.lock:
            self.state.lfs[oid] = body
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def lfs_verify(self, method, match, params, user) -> None:
        payload = json.loads(self._body())
        if payload["oid"] not in self.state.lfs:
            raise HubError(404, f"object {payload['oid']} was not uploaded")
        self._json(200, {})

    def commit(self, method, match, params, user) -> None:
        repo_type = REPO_TYPES[match["type"]]
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        repo = self._repo(repo_type, match["repo"], user, write=True)
        if params.get("create_pr"):
            raise HubError(400, "pull requests are not supported by this test server")
        branch = urllib.parse.unquote(match["rev"])
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "the first NDJSON line must be the header")
        header = lines[0]["value"]
        with self.state.lock:
            head = repo.commits[repo.branches[branch]]
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    content = base64.b64decode(value["content"])
                    files[value["path"]] = Blob(len(content), content)
                elif key == "lfsFile":
                    if value["oid"] not in self.state.lfs:
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    files[value["path"]] = Blob(len(self.state.lfs[value["oid"]]), lfs_oid=value["oid"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {p: b for p, b in files.items() if not p.startswith(folder)}
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            if "README.md" in files and (errors := validate_card(self._read(files["README.md"]).decode(), repo_type)):
                raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors))
            commit = self.state.new_commit(repo, branch, header["summary"], header.get("description", ""), user, files)
        url = f"{self.base}/{URL_PREFIXES[repo_type]}{repo.id}/commit/{commit.oid}"
        self._json(200, {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})


def card_metadata(content: str) -> dict[str, Any]:
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
    data = yaml.safe_load(match[1]) if match else {}
    return data if isinstance(data, dict) else {}


def validate_card(content: str, repo_type: str) -> list[str]:
    """The subset of the Hub's README metadata checks these tests rely on."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if not match:
        return []
    try:
        data = yaml.safe_load(match[1])
    except yaml.YAMLError as error:
        return [f"YAML front matter does not parse: {error}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["YAML front matter must be a mapping"]
    errors = []
    if repo_type == "space" and data.get("sdk") not in SPACE_SDKS:
        errors.append(f'"sdk" must be one of {sorted(SPACE_SDKS)}, got {data.get("sdk")!r}')
    for key in ("tags", "datasets", "base_model", "models"):
        value = data.get(key)
        if value is not None and not isinstance(value, (str, list)):
            errors.append(f'"{key}" must be a string or a list')
    index = data.get("model-index")
    if index is not None:
        if not isinstance(index, list) or not all(isinstance(e, dict) and "name" in e for e in index):
            errors.append('"model-index" must be a list of {name, results}')
        else:
            for entry in index:
                for result in entry.get("results", []):
                    if not {"task", "dataset", "metrics"} <= set(result):
                        errors.append('"model-index" results need task, dataset and metrics')
                    for metric in result.get("metrics", []):
                        if "type" not in metric or "value" not in metric:
                            errors.append('"model-index" metrics need type and value')
    if repo_type == "dataset" and "configs" in data:
        for config in data["configs"]:
            if "config_name" not in config or "data_files" not in config:
                errors.append('"configs" entries need config_name and data_files')
    return errors


_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_TYPE = r"(?P<type>models|datasets|spaces)"
_PREFIX = r"(?P<prefix>datasets/|spaces/)?"
ROUTES = [
    (r"/api/whoami-v2", {"GET"}, Handler.whoami),
    (r"/api/validate-yaml", {"POST"}, Handler.validate_yaml),
    (r"/api/repos/create", {"POST"}, Handler.create_repo),
    (rf"/api/{_TYPE}/{_REPO}(?:/revision/(?P<rev>[^/]+))?", {"GET"}, Handler.repo_info),
    (rf"/api/{_TYPE}/{_REPO}/refs", {"GET"}, Handler.refs),
    (rf"/api/{_TYPE}/{_REPO}/commits/(?P<rev>[^/]+)", {"GET"}, Handler.commits),
    (rf"/api/{_TYPE}/{_REPO}/branch/(?P<branch>[^/]+)", {"POST"}, Handler.create_branch),
    (rf"/api/{_TYPE}/{_REPO}/tree/(?P<rev>[^/]+)(?P<path>/.*)?", {"GET"}, Handler.tree),
    (rf"/api/{_TYPE}/{_REPO}/paths-info/(?P<rev>[^/]+)", {"POST"}, Handler.paths_info),
    (rf"/api/{_TYPE}/{_REPO}/preupload/(?P<rev>[^/]+)", {"POST"}, Handler.preupload),
    (rf"/api/{_TYPE}/{_REPO}/commit/(?P<rev>[^/]+)", {"POST"}, Handler.commit),
    (rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch", {"POST"}, Handler.lfs_batch),
    (r"/lfs-upload/(?P<ticket>[\w-]+)", {"PUT"}, Handler.lfs_upload),
    (r"/lfs-verify", {"POST"}, Handler.lfs_verify),
    (rf"/{_PREFIX}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", {"GET", "HEAD"}, Handler.resolve),
]


class HubServer(ThreadingHTTPServer):
    """`with HubServer({"hf_token": "user"}) as hub:` serves on `hub.url` from a daemon thread."""

    daemon_threads = True

    def __init__(self, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), Handler)
        self.state = HubState(tokens)
        self.url = f"http://{host}:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The content of every file of a repo at a revision (for assertions)."""
        repo = self.state.repos[(repo_type, repo_id)]
        commit = repo.resolve(revision)
        assert commit is not None, f"{repo_id} has no revision {revision!r}"
        return {p: b.content if b.lfs_oid is None else self.state.lfs[b.lfs_oid] for p, b in commit.files.items()}

    def lfs_paths(self, repo_type: str, repo_id: str, revision: str = "main") -> set[str]:
        commit = self.state.repos[(repo_type, repo_id)].resolve(revision)
        return {path for path, blob in commit.files.items() if blob.lfs_oid is not None}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--token", default="hf_test")
    parser.add_argument("--user", default="tester")
    args = parser.parse_args()
    server = HubServer({args.token: args.user}, port=args.port)
    print(f"serving on {server.url}")
    server.serve_forever()
