# shellcheck shell=bash
#
# config.sh: the node configuration, for shell scripts on a Triton Linux
# compute node (the headnode's joysetup.sh sources it as CONFIG_SH).
#
#   . /usr/triton/bin/config.sh
#   load_sdc_config            # sets CONFIG_<key> for every key=value line
#   load_sdc_config NODE_      # ... or NODE_<key>
#
# Which file:
#   SDC_CONFIG_FILENAME  the config file. When empty, it is set to
#                        /usr/triton/config/node.config (init keeps a copy of
#                        /etc/node.config there before setup; on a set-up CN
#                        /usr/triton/config links to /opt/triton/config).
#                        Emptying it and calling load_sdc_config again picks
#                        the default again.
#   SDC_CONFIG_INC_DIR   a directory whose optional `generic` file is read
#                        before the config file (later lines win). When empty,
#                        the config file's directory.
# Besides the keys of the files, <prefix>config_inc_dir is set to
# SDC_CONFIG_INC_DIR.
#
# File format: `key=value` lines, as written by the headnode (key='value').
# Leading blanks are ignored; so are blank lines, `#` comments and lines
# that do not start with a letter. A key is a letter followed by letters,
# digits and `_`. The value is read as one shell word: '...' is literal,
# "..." honours \$ \` \" \\ and \<newline>, \x outside quotes is x, and a
# quote may run over several lines. NOTHING IS EXPANDED OR EXECUTED: `$x`,
# `$(...)` and backquotes stay as they are written. Text after the value
# (other than a `# comment`) is ignored with a warning on stderr, as are
# lines that are not key=value; values are never printed.
#
# Safe under `set -o errexit -o nounset -o pipefail`; xtrace is switched off
# inside these functions so that values (passwords) stay out of logs.

# Sets SDC_CONFIG_FILENAME and SDC_CONFIG_INC_DIR if they are empty.
load_sdc_config_filename()
{
    if [[ -z ${SDC_CONFIG_FILENAME:-} ]]; then
        SDC_CONFIG_FILENAME=/usr/triton/config/node.config
        SDC_CONFIG_INC_DIR=/usr/triton/config
    elif [[ -z ${SDC_CONFIG_INC_DIR:-} ]]; then
        case $SDC_CONFIG_FILENAME in
        */*) SDC_CONFIG_INC_DIR=${SDC_CONFIG_FILENAME%/*} ;;
        *) SDC_CONFIG_INC_DIR=. ;;
        esac
        if [[ -z $SDC_CONFIG_INC_DIR ]]; then
            SDC_CONFIG_INC_DIR=/
        fi
    fi
    return 0
}

# Reads the start of $1 as one shell word, without expanding anything.
# Sets __tc_word to the word and __tc_rest to what follows it. Returns 1 if
# the text ends inside quotes or right after a backslash (the caller then
# appends the next line and tries again).
__triton_config_word()
{
    local s=$1 c d
    # Runs of characters with no special meaning, outside and inside "...".
    local re_plain=$'^([^\'"\\\\ \t\n]+)(.*)$'
    local re_dq=$'^([^"\\\\]+)(.*)$'
    __tc_word=
    __tc_rest=
    while [[ -n $s ]]; do
        c=${s:0:1}
        case $c in
        "'")
            s=${s:1}
            if [[ $s != *"'"* ]]; then
                return 1
            fi
            __tc_word+=${s%%"'"*}
            s=${s#*"'"}
            ;;
        '"')
            s=${s:1}
            while true; do
                if [[ -z $s ]]; then
                    return 1
                fi
                c=${s:0:1}
                if [[ $c == '"' ]]; then
                    s=${s:1}
                    break
                elif [[ $c == "\\" ]]; then
                    d=${s:1:1}
                    case $d in
                    '') return 1 ;;
                    $'\n') s=${s:2} ;;
                    '$' | '`' | '"' | "\\") __tc_word+=$d; s=${s:2} ;;
                    *) __tc_word+="\\"; s=${s:1} ;;
                    esac
                elif [[ $s =~ $re_dq ]]; then
                    __tc_word+=${BASH_REMATCH[1]}
                    s=${BASH_REMATCH[2]}
                else
                    # Not matched (e.g. a byte that is invalid in the locale).
                    __tc_word+=$c
                    s=${s:1}
                fi
            done
            ;;
        "\\")
            d=${s:1:1}
            case $d in
            '') return 1 ;;
            $'\n') s=${s:2} ;;
            *) __tc_word+=$d; s=${s:2} ;;
            esac
            ;;
        ' ' | $'\t' | $'\n')
            break
            ;;
        *)
            if [[ $s =~ $re_plain ]]; then
                __tc_word+=${BASH_REMATCH[1]}
                s=${BASH_REMATCH[2]}
            else
                __tc_word+=$c
                s=${s:1}
            fi
            ;;
        esac
    done
    __tc_rest=$s
    return 0
}

# Sets <prefix><key> for every key=value line of file $2 (prefix $1).
__triton_config_read()
{
    # Locals are named __tc_* so that they cannot hide the variables set.
    local __tc_prefix=$1 __tc_file=$2
    local -a __tc_lines=()
    local __tc_n __tc_i=0 __tc_lineno __tc_line __tc_key __tc_text
    local __tc_word __tc_rest
    if ! mapfile -t __tc_lines <"$__tc_file"; then
        echo "config.sh: cannot read $__tc_file" >&2
        return 1
    fi
    __tc_n=${#__tc_lines[@]}
    while ((__tc_i < __tc_n)); do
        __tc_line=${__tc_lines[__tc_i]%$'\r'}
        __tc_i=$((__tc_i + 1))
        __tc_lineno=$__tc_i
        __tc_line=${__tc_line#"${__tc_line%%[![:blank:]]*}"}
        if [[ ! $__tc_line =~ ^[A-Za-z] ]]; then
            continue
        fi
        if [[ ! $__tc_line =~ ^([A-Za-z][A-Za-z0-9_]*)=(.*)$ ]]; then
            echo "config.sh: warning: $__tc_file:$__tc_lineno: not a key=value line, ignored" >&2
            continue
        fi
        __tc_key=${BASH_REMATCH[1]}
        __tc_text=${BASH_REMATCH[2]}
        # An open quote (or a final backslash) continues on the next line.
        while ! __triton_config_word "$__tc_text"; do
            if ((__tc_i >= __tc_n)); then
                break
            fi
            __tc_text+=$'\n'${__tc_lines[__tc_i]%$'\r'}
            __tc_i=$((__tc_i + 1))
        done
        if ! __triton_config_word "$__tc_text"; then
            echo "config.sh: warning: $__tc_file:$__tc_lineno: unterminated quote in the value of" \
                "$__tc_key, ignored" >&2
            # Go on with the line after it.
            __tc_i=$__tc_lineno
            continue
        fi
        __tc_rest=${__tc_rest#"${__tc_rest%%[![:space:]]*}"}
        if [[ -n $__tc_rest && $__tc_rest != '#'* ]]; then
            echo "config.sh: warning: $__tc_file:$__tc_lineno: text after the value of $__tc_key ignored" \
                "(quote values that contain blanks)" >&2
        fi
        printf -v "$__tc_prefix$__tc_key" '%s' "$__tc_word"
    done
    return 0
}

# Loads the node config into <prefix><key> variables (prefix: $1, default
# CONFIG_). A missing config file is reported on stderr and is not an error.
load_sdc_config()
{
    local -
    set +o xtrace
    local __tc_pfx=${1:-CONFIG_}
    local __tc_f
    if [[ ! $__tc_pfx =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        echo "config.sh: invalid variable prefix \"$__tc_pfx\"" >&2
        return 1
    fi
    load_sdc_config_filename
    if [[ ! -f $SDC_CONFIG_FILENAME ]]; then
        echo "config.sh: warning: no node config at $SDC_CONFIG_FILENAME, no ${__tc_pfx}* variables set" >&2
        return 0
    fi
    for __tc_f in "$SDC_CONFIG_INC_DIR/generic" "$SDC_CONFIG_FILENAME"; do
        if [[ -f $__tc_f ]]; then
            __triton_config_read "$__tc_pfx" "$__tc_f" || return 1
        fi
    done
    printf -v "${__tc_pfx}config_inc_dir" '%s' "$SDC_CONFIG_INC_DIR"
    return 0
}
