# Sourced by the boot steps: what cloud-init's OpenStack data source does, with busybox only.
METADATA=http://169.254.169.254/openstack/latest
JSON_AWK=$HERE/json.awk

# fetch NAME FILE: GET $METADATA/NAME into FILE (root's only: it may hold the admin password), 20 tries
# 0.5 s apart; status 0, 2 if the service says 404 (no such document), 1 if it cannot be had (the last
# error in FILE.err)
fetch() {
    tries=0
    while [ $tries -lt 20 ]; do
        # busybox wget's own -T crashes: timeout(1) bounds each try instead
        if timeout 5 wget -q -O "$2.part" "$METADATA/$1" 2>"$2.err"; then
            chmod 600 "$2.part" && mv "$2.part" "$2"
            return 0
        fi
        rm -f "$2.part"
        grep -q ' 404' "$2.err" && return 2
        sleep 0.5
        tries=$((tries + 1))
    done
    return 1
}

# meta PATH: the values at PATH of meta_data.json (see json.awk), one a line
meta() {
    LC_ALL=C awk -v path="$1" -f "$JSON_AWK" "$RUN/meta_data.json"
}

metadata_steps() {
    if ! fetch meta_data.json "$RUN/meta_data.json"; then
        fail metadata "cannot fetch $METADATA/meta_data.json: $(tail -n 1 "$RUN/meta_data.json.err")"
        return
    fi
    if ! meta uuid > /dev/null; then
        fail metadata "meta_data.json is not JSON"
        return
    fi
    uuid=$(meta uuid | head -n 1)
    hostname=$(meta hostname | head -n 1)
    [ -n "$hostname" ] || hostname=$(meta name | head -n 1)
    say metadata uuid "$uuid" hostname "$hostname"
    hostname_step "$hostname"
    password_step
    keys_step
    user_data_step
}

# hostname: the metadata's name up to its first dot, as cloud-init sets it
hostname_step() {
    short=${1%%.*}
    case $short in
    '' | -* | *[!A-Za-z0-9-]*)
        fail hostname "not a host name: '$1'"
        return ;;
    esac
    hostname "$short"
    echo "$short" > /etc/hostname
    echo "127.0.1.1 $1 $short" >> /etc/hosts
    say hostname hostname "$short"
}

# password: root's, SHA-512 crypt of admin_pass, into /etc/shadow; root stays locked without one
password_step() {
    password=$(meta admin_pass | head -n 1)
    if [ -z "$password" ]; then
        say password -n set 0
        return
    fi
    hash=$(printf '%s\n' "$password" | mkpasswd -m sha512 -P 0)
    case $hash in
    '$6$'*) ;;
    *) fail password "mkpasswd gave no SHA-512 hash"; return ;;
    esac
    if ! set_password root "$hash" 2>/dev/null; then
        fail password "cannot write root's hash into $SHADOW"
        return
    fi
    say password -n set 1
}

# keys: every value of public_keys (name -> OpenStack key line) into root's authorized_keys
keys_step() {
    mkdir -p -m 700 /root/.ssh
    meta 'public_keys/*' | grep -v '^[[:space:]]*$' > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
    say keys -n count "$(wc -l < /root/.ssh/authorized_keys)"
}

# user-data: run it if it is a script (#!), for 10 minutes at most, its output on the console and in
# /var/log/user-data.log
user_data_step() {
    data=$RUN/user-data
    fetch user_data "$data"
    case $? in
    2) say user-data status none; return ;;
    1) fail user-data "cannot fetch $METADATA/user_data: $(tail -n 1 "$data.err")"; return ;;
    esac
    if [ "$(head -c 2 "$data")" != '#!' ]; then
        say user-data status not-a-script
        return
    fi
    chmod 700 "$data"
    (cd /root && timeout 600 "$data" < /dev/null; echo $? > "$data.status") 2>&1 |
        tee /var/log/user-data.log > "$CONSOLE"
    say user-data -n status "$(cat "$data.status")"
}
