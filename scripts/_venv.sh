# Sourced by scripts/run, scripts/test, scripts/bench and scripts/chaos (from the project root):
#   ensure_venv NAME PIP_TARGET STAMP
# creates .venv with $PYTHON (default python3, which must be >= 3.11) when it is missing, and runs
# `pip install -e PIP_TARGET` when pyproject.toml is newer than .venv/STAMP (or STAMP is missing).
# Exits 2 with a message saying what to set when no suitable Python is found.

ensure_venv() {
    local name=$1 target=$2 stamp=.venv/$3
    local python="${PYTHON:-python3}"
    if [[ ! -x .venv/bin/python ]]; then
        if ! command -v "$python" >/dev/null 2>&1; then
            echo "scripts/$name: $python not found; install Python >= 3.11 or set PYTHON=/path/to/python3.11" >&2
            exit 2
        fi
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "scripts/$name: taskrunner needs Python >= 3.11, but $python is $("$python" -c 'import platform; print(platform.python_version())'); set PYTHON=/path/to/python3.11" >&2
            exit 2
        fi
        echo "==> creating .venv with $python" >&2
        "$python" -m venv .venv
    fi
    if [[ ! -e $stamp || pyproject.toml -nt $stamp ]]; then
        local shown=$target
        [[ $target == *'['* ]] && shown="'$target'"  # as typed in a shell: .[test] quoted
        echo "==> pip install -e $shown" >&2
        .venv/bin/pip install --quiet -e "$target"
        touch "$stamp"
    fi
}
