# Read the part of a cloud-init seed (meta-data or #cloud-config user-data) the demo guest
# honours and print it as tab-separated records; everything else is ignored.
#   top-level scalars      ->  top<TAB>KEY<TAB>VALUE
#   each mapping in users  ->  user<TAB>begin, field<TAB>KEY<TAB>VALUE..., sshkey<TAB>KEY...,
#                              user<TAB>end
# Block style as PyYAML writes it, plus one-line flow lists ([a, b]) for key lists.

function trim(v) {
    sub(/^[ \t]+/, "", v)
    sub(/[ \t\r]+$/, "", v)
    return v
}

function scalar(v) {
    v = trim(v)
    if (v ~ /^'/) {
        v = substr(v, 2)
        sub(/'[ \t]*(#.*)?$/, "", v)
        gsub(/''/, "'", v)
        return v
    }
    if (v ~ /^"/) {
        v = substr(v, 2)
        sub(/"[ \t]*(#.*)?$/, "", v)
        gsub(/\\\\/, "\001", v)
        gsub(/\\"/, "\"", v)
        gsub(/\001/, "\\", v)
        return v
    }
    # In a plain scalar a comment starts at " #".
    sub(/[ \t]+#.*$/, "", v)
    return v
}

function emit_list(tag, v,   n, parts, i) {
    v = trim(v)
    sub(/^\[/, "", v)
    sub(/\][ \t]*$/, "", v)
    n = split(v, parts, ",")
    for (i = 1; i <= n; i++) {
        if (trim(parts[i]) != "") {
            print tag "\t" scalar(parts[i])
        }
    }
}

# True when a quoted scalar opens on this line and closes on a later one.
function unclosed(v,   t) {
    v = trim(v)
    if (v ~ /^'/) {
        t = substr(v, 2)
        gsub(/''/, "", t)
        return t !~ /'/
    }
    if (v ~ /^"/) {
        t = substr(v, 2)
        gsub(/\\./, "", t)
        return t !~ /"/
    }
    return 0
}

function close_user() {
    if (in_user) {
        print "user\tend"
    }
    in_user = 0
}

{
    line = $0
    sub(/\r$/, "", line)
    if (line ~ /^[ \t]*(#.*)?$/ || line ~ /^(---|\.\.\.)/) {
        next
    }
    # A writer may fold a long quoted scalar over several lines; join them with spaces.
    value = line
    sub(/^[ \t]*(- )?/, "", value)
    if (match(value, /^[A-Za-z0-9_.-]+:( |$)/)) {
        value = substr(value, RLENGTH + 1)
    }
    while (unclosed(value) && (getline more) > 0) {
        more = trim(more)
        line = line " " more
        value = value " " more
    }
    match(line, /^ */)
    indent = RLENGTH
    text = substr(line, indent + 1)

    if (indent == 0 && text !~ /^-/) {
        close_user()
        subkey = ""
        section = ""
        skip_item = 0
        if (match(text, /^[A-Za-z0-9_.-]+:/)) {
            key = substr(text, 1, RLENGTH - 1)
            value = trim(substr(text, RLENGTH + 1))
            if (value == "") {
                section = key
            } else {
                print "top\t" key "\t" scalar(value)
            }
        }
        next
    }
    if (section != "users") {
        next
    }

    # A new item of the users list: "- name: sam" or a bare "- default".
    if (text ~ /^- / && (!in_user && !skip_item || indent == item_dash)) {
        close_user()
        item_dash = indent
        item_indent = indent + 2
        subkey = ""
        rest = substr(text, 3)
        if (rest ~ /^[A-Za-z0-9_]+:/) {
            in_user = 1
            skip_item = 0
            print "user\tbegin"
            text = rest
            indent = item_indent
        } else {
            skip_item = 1
            next
        }
    }
    if (!in_user) {
        next
    }

    if (subkey == "ssh_authorized_keys" && text ~ /^- / && indent >= item_indent) {
        print "sshkey\t" scalar(substr(text, 3))
        next
    }
    if (indent == item_indent && match(text, /^[A-Za-z0-9_]+:/)) {
        key = substr(text, 1, RLENGTH - 1)
        value = trim(substr(text, RLENGTH + 1))
        subkey = ""
        if (value == "") {
            subkey = key
        } else if (key == "ssh_authorized_keys" && value ~ /^\[/) {
            emit_list("sshkey", value)
        } else {
            print "field\t" key "\t" scalar(value)
        }
    }
}

END {
    close_user()
}
