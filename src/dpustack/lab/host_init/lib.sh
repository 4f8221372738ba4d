# Sourced by every script of the dpustack lab host's init: the console's step lines, the shared paths.
# The environment may move RUN and CONSOLE (tests run the scripts on the build machine).
PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PATH
HERE=/etc/dpustack                         # the scripts
RUN=${DPUSTACK_RUN:-/run/dpustack}         # what they tell each other: nic/<name>/, primary, ready
CONSOLE=${DPUSTACK_CONSOLE:-/dev/console}  # where step lines go
LABEL=DPUSTACK                             # the boot disk's FAT volume label (host_init.LABEL)
SHADOW=${DPUSTACK_SHADOW:-/etc/shadow}     # the users' password hashes

# json_string TEXT: TEXT as a JSON string (quotes and backslashes escaped, control characters dropped)
json_string() {
    case $1 in
    *[\"\\]* | *[[:cntrl:]]*) printf '"%s"' "$(printf %s "$1" | tr -d '\000-\037\177' | sed 's/[\\"]/\\&/g')" ;;
    *) printf '"%s"' "$1" ;;
    esac
}

# say STEP [[-n] NAME VALUE]...: the line "dpustack-init: {"step":STEP,NAME:VALUE...}" on the console;
# a value is a JSON string, or after -n a number (a string still if it is not one)
say() {
    line="{\"step\":$(json_string "$1")"
    shift
    while [ $# -ge 2 ]; do
        if [ "$1" = -n ] && [ $# -ge 3 ]; then
            shift
            case $2 in
            '' | *[!0-9]* | 0?*) value=$(json_string "$2") ;;
            *) value=$2 ;;
            esac
        else
            value=$(json_string "$2")
        fi
        line="$line,$(json_string "$1"):$value"
        shift 2
    done
    echo "dpustack-init: $line}" >> "$CONSOLE"
}

# fail WHAT WHY: the step line of a failure
fail() {
    say failed what "$1" why "$2"
}

# set_password USER HASH: USER's password hash in $SHADOW (HASH a crypt(3) hash: letters, digits, ".",
# "/" and "$"); status 1, and why on stderr, if USER has no line there or HASH is no such hash
set_password() {
    case $1 in
    '' | -* | *[!A-Za-z0-9._-]*) echo "not a user name: '$1'" >&2; return 1 ;;
    esac
    case $2 in
    '' | *[!A-Za-z0-9./\$]*) echo "not a password hash for $1" >&2; return 1 ;;
    esac
    if ! grep -q "^$1:" "$SHADOW"; then
        echo "no user $1 in $SHADOW" >&2
        return 1
    fi
    sed -i "s|^$1:[^:]*:|$1:$2:|" "$SHADOW"
}
