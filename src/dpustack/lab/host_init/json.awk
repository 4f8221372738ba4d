# json.awk: print the values at one path of a JSON document, for shells without a JSON tool.
#
#   awk -v path=uuid -f json.awk meta_data.json
#   awk -v path='public_keys/*' -f json.awk meta_data.json
#
# A path is member names (or array indexes, from 0) joined by "/"; "*" matches any one
# member or index. Each value found there is printed on a line of its own, in document
# order: a string decoded (its escapes, \uXXXX as UTF-8, NUL dropped), a number, true,
# false or null as written; an object or array found there is not printed. The exit
# status is 2, and nothing is printed, if the input is not one JSON value.
# Byte oriented (run it in the C locale); names containing "/" cannot be asked for.

{ rest = rest $0 "\n" }

END {
    want = "/" path
    wanted = split(want, want_parts, "/")
    next_token()
    parse_value("")
    if (bad || token != "")
        exit 2
    printf "%s", found
}

# The next token of the input (from "rest") into "token"; "" at the end of the input.
function next_token(    first) {
    sub(/^[ \t\r\n]+/, "", rest)
    first = substr(rest, 1, 1)
    if (first == "") {
        token = ""
        return
    }
    if (index("{}[]:,", first)) {
        token = first
        rest = substr(rest, 2)
        return
    }
    if (first == "\"") {
        if (!match(rest, /^"([^"\\]|\\.)*"/))
            return fail()
    } else if (!match(rest, /^(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?|true|false|null)/)) {
        return fail()
    }
    token = substr(rest, 1, RLENGTH)
    rest = substr(rest, RLENGTH + 1)
    if (index("0123456789", substr(rest, 1, 1)) && first != "\"")
        fail()  # a number running into more digits: "01"
}

function fail() {
    bad = 1
    token = ""
    rest = ""
}

# One value, starting at "token", at path "at"; leaves "token" at what follows it.
function parse_value(at,    name, index_) {
    if (token == "{") {
        next_token()
        if (token == "}")
            return next_token()
        while (!bad) {
            if (substr(token, 1, 1) != "\"")
                return fail()
            name = decode(token)
            next_token()
            if (token != ":")
                return fail()
            next_token()
            parse_value(at "/" name)
            if (token == "}")
                return next_token()
            if (token != ",")
                return fail()
            next_token()
        }
    } else if (token == "[") {
        next_token()
        if (token == "]")
            return next_token()
        for (index_ = 0; !bad; index_++) {
            parse_value(at "/" index_)
            if (token == "]")
                return next_token()
            if (token != ",")
                return fail()
            next_token()
        }
    } else if (token == "" || index("}]:,", token)) {
        fail()
    } else {
        if (is_wanted(at))
            found = found (substr(token, 1, 1) == "\"" ? decode(token) : token) "\n"
        next_token()
    }
}

function is_wanted(at,    parts, count, i) {
    count = split(at, parts, "/")
    if (count != wanted)
        return 0
    for (i = 2; i <= count; i++)  # compared as strings: busybox awk compares "INFINITY" or "NAN" as numbers
        if (want_parts[i] != "*" && (want_parts[i] "") != (parts[i] ""))
            return 0
    return 1
}

# A string token's text: the quotes removed, the escapes replaced.
function decode(text,    out, at, escape, code, low) {
    text = substr(text, 2, length(text) - 2)
    out = ""
    while ((at = index(text, "\\")) > 0) {
        out = out substr(text, 1, at - 1)
        escape = substr(text, at + 1, 1)
        text = substr(text, at + 2)
        if (escape == "n") out = out "\n"
        else if (escape == "t") out = out "\t"
        else if (escape == "r") out = out "\r"
        else if (escape == "b") out = out "\b"
        else if (escape == "f") out = out "\f"
        else if (escape == "\"" || escape == "\\" || escape == "/") out = out escape
        else if (escape == "u") {
            code = hex4(substr(text, 1, 4))
            text = substr(text, 5)
            if (code >= 55296 && code < 56320 && substr(text, 1, 2) == "\\u") {  # a UTF-16 surrogate pair
                low = hex4(substr(text, 3, 4))
                if (low >= 56320 && low < 57344) {
                    code = 65536 + (code - 55296) * 1024 + (low - 56320)
                    text = substr(text, 7)
                }
            }
            out = out utf8(code)
        } else {
            fail()
        }
    }
    return out text
}

function hex4(digits,    value, i) {
    if (digits !~ /^[0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f]$/) {
        fail()
        return 0
    }
    value = 0
    for (i = 1; i <= 4; i++)
        value = value * 16 + index("0123456789abcdef", tolower(substr(digits, i, 1))) - 1
    return value
}

function utf8(code) {
    if (code == 0) return ""
    if (code < 128) return sprintf("%c", code)
    if (code < 2048) return sprintf("%c%c", 192 + int(code / 64), 128 + code % 64)
    if (code < 65536) return sprintf("%c%c%c", 224 + int(code / 4096), 128 + int(code / 64) % 64, 128 + code % 64)
    return sprintf("%c%c%c%c", 240 + int(code / 262144), 128 + int(code / 4096) % 64,
                   128 + int(code / 64) % 64, 128 + code % 64)
}
