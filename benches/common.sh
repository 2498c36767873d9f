# Sourced by the bench scripts after they cd to the repository: the set-up they share.

# Installs the Debian packages behind the commands that are missing, or stops naming
# them: install_missing benches/x.sh h2load:nghttp2-client valgrind:valgrind
install_missing() {
  local name=$1 pair sudo=""
  local missing=()
  shift
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if ! command -v apt-get >/dev/null; then
    echo "$name: missing Debian packages ${missing[*]}" >&2
    exit 1
  fi
  echo "$name: installing ${missing[*]}" >&2
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    echo "$name: could not install ${missing[*]}" >&2
    exit 1
  }
}

# Servers on CPU 0 and the load generator on CPU 1 (PIN_SERVER, PIN_LOAD: command
# prefixes), so that they do not take turns on one CPU: pin_cpus benches/x.sh
pin_cpus() {
  PIN_SERVER=() PIN_LOAD=()
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1)
  else
    echo "$1: fewer than 2 CPUs or no taskset: servers and load share CPUs" >&2
  fi
}

# The processes in `pids` are killed when the script exits, however it exits.
pids=()
kill_pids_at_exit() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
