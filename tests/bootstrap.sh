# Shared set-up for the README's two commands (sourced, not run).
# Idempotent: a second run only checks that everything is already there.

ensure_debian_packages() {
    # Installs the Debian packages whose commands are missing (CI machines start bare).
    local missing=()
    local pkg cmd
    for pkg in "$@"; do
        cmd="${pkg%%:*}"
        pkg="${pkg#*:}"
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing Debian packages: ${missing[*]}" >&2
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
        $sudo apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_venv() {
    # Creates .venv and installs the project with the given extras when pyproject.toml changed.
    local extras="$1"
    local python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        "$python" -m venv .venv
    fi
    local stamp=".venv/.distill-guard-$extras"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
        # xds-protos ships an old copy of opentelemetry-proto's modules under the same
        # file names; put the real package's files back so the OTLP exporter imports.
        local otel_proto
        otel_proto=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')
        .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
            --force-reinstall "opentelemetry-proto==$otel_proto"
        touch "$stamp"
    fi
}
