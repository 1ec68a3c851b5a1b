# Sourced by scripts/test-tools.d/*.sh: apt_install WHAT PACKAGE... installs Debian packages the
# way every step does (update first, wait for the dpkg lock, quiet, sudo when not root).
apt_install() {
    local what="$1" sudo=""
    shift
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "test-tools: installing $what (Debian packages $*)" >&2
    $sudo apt-get update -qq -o DPkg::Lock::Timeout=300
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
        "$@" >/dev/null
}
