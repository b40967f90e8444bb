# Shared by scripts/run-daemon, scripts/test and .ci/run: idempotent set-up steps.
# Source it; every function is safe to run again and fast when nothing is missing.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CCSERVER_VENV:-$REPO/.venv}
CACHE=${CCSERVER_CACHE:-/var/cache/ccserver-dev}
FERRETDB_VERSION=v1.24.2
PYTHON=${PYTHON:-python3}

say() { printf '== %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    # apt_install PACKAGE... : install the Debian packages that are missing
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${missing[@]}" >/dev/null
}

lock_entries() {
    # lock_entries LOCK NAME... : the entries (name==version and its --hash lines) of NAME... in LOCK
    local lock=$1
    shift
    awk -v names=" $* " '
        /^[A-Za-z0-9_.-]+==/ { split($1, part, "=="); keep = index(names, " " tolower(part[1]) " ") > 0 }
        /^[A-Za-z0-9_.-]+==/ || /^ +--hash=/ { if (keep) print; next }
        { keep = 0 }
    ' "$lock"
}

python_env() {
    # python_env LOCK : a venv with the pinned, hash-checked packages of requirements/LOCK.txt
    # (daemon or dev; refreshed by scripts/lock), then ccserver itself (editable, so not hashable)
    local lock="$REPO/requirements/${1:?python_env needs a lock name: daemon or dev}.txt"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.ccserver-installed-$1"
    if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ] || [ "$REPO/setup.py" -nt "$stamp" ]; then
        say "installing ${lock#"$REPO"/} and ccserver (editable) into $VENV"
        # the build tools of the lock first (a new venv has an old setuptools and no wheel,
        # which cannot build pyftpdlib below): hash-checked, no dependencies but each other
        local tools
        tools=$(mktemp)
        lock_entries "$lock" setuptools wheel packaging > "$tools"
        "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --only-binary :all: --no-deps \
            -r "$tools"
        rm -f "$tools"
        # wheels only, but for pyftpdlib (a test server published as an sdist alone): built from
        # its hash-checked sdist with the venv's own (locked) setuptools, since an isolated build
        # would fetch build tools that no lock pins
        "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --only-binary :all: \
            --no-binary pyftpdlib --no-build-isolation -r "$lock"
        # built with the locked setuptools and wheel, not a fresh unpinned download
        "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$REPO"
        touch "$stamp"
    fi
}

lock_venv() {
    # lock_venv NAME : prints the path of a venv holding exactly requirements/NAME.txt (hash-checked),
    # made once per version of the lock under $CACHE/venvs.  For the clients the tests drive that
    # cannot share the dev venv (py-tes 1.1 and 0.4, Snakemake and its plugins).  Safe to run
    # from several processes at once: one builds, under a lock, the others wait for it.
    local lock="$REPO/requirements/${1:?lock_venv needs a lock name}.txt" hash dir
    hash=$(sha256sum "$lock" | cut -c1-12)
    dir="$CACHE/venvs/$1-$hash"
    if [ ! -f "$dir/.complete" ]; then
        mkdir -p "$CACHE/venvs"
        (
            flock 9
            if [ ! -f "$dir/.complete" ]; then
                say "creating $dir from ${lock#"$REPO"/}"
                rm -rf "$dir"
                "$PYTHON" -m venv "$dir" >&2
                "$dir/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock" >&2
                touch "$dir/.complete"
            fi
        ) 9>"$dir.lock"
    fi
    echo "$dir"
}

py_tes_env() {
    # py_tes_env VERSION : prints the interpreter of a virtualenv with requirements/py-tes-VERSION.txt.
    # The TES client tests (tests/tes/api) run py-tes 1.1 and 0.4 in these; the two conflict.
    echo "$(lock_venv "py-tes-$1")/bin/python"
}

ferretdb_binary() {
    # Prints the path of a FerretDB $FERRETDB_VERSION binary, building it (cached) if needed.
    local bin="$CACHE/bin/ferretdb-$FERRETDB_VERSION"
    if [ ! -x "$bin" ]; then
        command -v go >/dev/null || { echo "go is needed to build FerretDB" >&2; return 1; }
        say "building FerretDB $FERRETDB_VERSION from the Go module proxy (once)"
        local dir src
        dir=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
        src=$(mktemp -d)
        cp -r "$dir/." "$src"
        chmod -R u+w "$src"
        # the module zip lacks the generated version file that a release build embeds
        echo "$FERRETDB_VERSION" > "$src/build/version/version.txt"
        mkdir -p "$CACHE/bin"
        (cd "$src" && GOFLAGS=-buildvcs=false go build -o "$bin.tmp" ./cmd/ferretdb)
        mv "$bin.tmp" "$bin"
        rm -rf "$src"
    fi
    echo "$bin"
}

kube_binaries() {
    # Prints the directory holding kube-apiserver, kube-controller-manager, kube-scheduler,
    # kubelet and etcd, built once from the Go module proxy (the wrapper modules under
    # scripts/kube/) and cached by their go.sum, so a later run finds them at once.
    local key dir
    key=$(cat "$REPO/scripts/kube/k8s/go.sum" "$REPO/scripts/kube/etcd/go.sum" | sha256sum | cut -c1-16)
    dir="$CACHE/kube-$key"
    if [ ! -x "$dir/etcd" ]; then
        command -v go >/dev/null || { echo "go is needed to build Kubernetes" >&2; return 1; }
        say "building Kubernetes and etcd from the Go module proxy (once per go.sum; ~20 min on 2 cores)"
        local started=$SECONDS
        mkdir -p "$dir.tmp"
        (cd "$REPO/scripts/kube/k8s" && GOFLAGS="-buildvcs=false -mod=readonly" go build -trimpath \
            -o "$dir.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet) >&2
        (cd "$REPO/scripts/kube/etcd" && GOFLAGS="-buildvcs=false -mod=readonly" go build -trimpath \
            -o "$dir.tmp/etcd" go.etcd.io/etcd/server/v3) >&2
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
        say "Kubernetes binaries built in $((SECONDS - started)) s"
    fi
    echo "$dir"
}

DOCKERD_STARTED=
docker_answers() { docker ${1:+-H "$1"} version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_dockerd() {
    # Starts the local dockerd unless one already answers on /var/run/docker.sock.
    apt_install docker.io
    if docker_answers; then return 0; fi
    say "starting dockerd"
    mkdir -p /var/log
    setsid dockerd --host unix:///var/run/docker.sock >/var/log/ccserver-dockerd.log 2>&1 < /dev/null &
    DOCKERD_STARTED=$!
    for _ in $(seq 1 120); do
        docker_answers && return 0
        sleep 0.5
    done
    echo "dockerd did not answer within 60 s; its log:" >&2
    tail -n 30 /var/log/ccserver-dockerd.log >&2
    return 1
}

stop_dockerd() {
    if [ -n "$DOCKERD_STARTED" ]; then
        say "stopping the dockerd this script started"
        kill "$DOCKERD_STARTED" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$DOCKERD_STARTED" 2>/dev/null || break; sleep 0.5; done
        DOCKERD_STARTED=
    fi
}

node_packages() {
    # node_packages DIR : `npm ci` in DIR (exactly its package-lock.json), skipped while the
    # lock is the one installed last time.  Never downloads a browser: Debian's chromium is used.
    local dir=$1
    local stamp="$dir/node_modules/.ccserver-installed-lock"
    command -v node >/dev/null || apt_install nodejs
    command -v npm >/dev/null || apt_install npm
    if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then return 0; fi
    say "installing the node packages of $dir (npm ci)"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$dir/package-lock.json" "$stamp"
}
