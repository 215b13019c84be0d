#!/usr/bin/env bash
# Regenerates the scanner corpus: runs each real tool in a throwaway "scanner" network namespace
# against addresses routed into a throwaway "darknet" namespace, and keeps what tcpdump saw on the
# darknet end, one pcap per tool run, plus manifest.toml describing each file.
#
# Traffic never leaves the two namespaces: they are joined only to each other by a veth pair, use
# documentation addresses only (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), and the
# scanner namespace has no other interface. Both namespaces are removed on exit, on failure and on
# Ctrl-C.
#
# Usage (root): tests/corpus/regenerate.sh [OUTPUT_DIR]     (default: this script's directory)
# Needs: iproute2, tcpdump, python3 and the tools below (see README.md for the install lines).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(mkdir -p "${1:-$HERE}" && cd "${1:-$HERE}" && pwd)
TAG="sscorp-$$-"
NS_SCAN="${TAG}scan"
NS_DARK="${TAG}dark"
# Interface names are at most 15 bytes; a PID is at most 7 digits.
VETH_SCAN="scs$$"
VETH_DARK="scd$$"
SCAN_IP=198.51.100.2
DARK_IP=198.51.100.1
SCAN_IP6=2001:db8:1::2
DARK_IP6=2001:db8:1::1
# Targets inside the darknet namespace. Only RESPONDER, TCP_OPEN and SIPP_UAS are local addresses
# there (something answers); the rest are routed in and dropped unanswered, as on a darknet.
RESPONDER=203.0.113.10
TCP_OPEN=203.0.113.20
SIPP_UAS=203.0.113.30
KEEPALIVE_TARGET=203.0.113.40
DARK_TARGET=203.0.113.50
DARK_TARGET6=2001:db8:2::50

WORK=$(mktemp -d /tmp/sscorp.XXXXXX)
BG_PIDS=()
TCPDUMP_PID=""

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    for pid in "${BG_PIDS[@]}" ${TCPDUMP_PID:+"$TCPDUMP_PID"}; do
        kill "$pid" 2>/dev/null
    done
    # Anything a tool left running inside our namespaces (masscan, sipp, kamailio children).
    for ns in "$NS_SCAN" "$NS_DARK"; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -9 "$pid" 2>/dev/null
            done
            ip netns del "$ns"
        fi
    done
    if [ -n "${KEEP_WORK:-}" ]; then
        echo "tool output kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    if [ "$status" -ne 0 ]; then
        echo "regenerate.sh: failed (status $status); namespaces removed" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scan() { ip netns exec "$NS_SCAN" "$@"; }
dark() { ip netns exec "$NS_DARK" "$@"; }

# The first line of a command's output that matches a pattern (tools print versions differently).
version_of() {
    local pattern=$1 text
    shift
    text=$("$@" 2>&1 || true)
    grep -m1 -E "$pattern" <<<"$text" | sed 's/[[:space:]]*$//'
}

setup_namespaces() {
    ip netns add "$NS_SCAN"
    ip netns add "$NS_DARK"
    for ns in "$NS_SCAN" "$NS_DARK"; do
        # Before the veth ends move in, so they take these defaults: no link-local address, no
        # router solicitations, hence no IPv6 housekeeping chatter in the captures.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_ra=0 \
            net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.default.addr_gen_mode=1
        ip netns exec "$ns" ip link set lo up
    done
    ip link add "$VETH_SCAN" type veth peer name "$VETH_DARK"
    ip link set "$VETH_SCAN" netns "$NS_SCAN"
    ip link set "$VETH_DARK" netns "$NS_DARK"
    scan ip addr add "$SCAN_IP/24" dev "$VETH_SCAN"
    scan ip -6 addr add "$SCAN_IP6/64" dev "$VETH_SCAN" nodad
    scan ip link set "$VETH_SCAN" up
    dark ip addr add "$DARK_IP/24" dev "$VETH_DARK"
    dark ip -6 addr add "$DARK_IP6/64" dev "$VETH_DARK" nodad
    for addr in "$RESPONDER" "$TCP_OPEN" "$SIPP_UAS"; do
        dark ip addr add "$addr/32" dev "$VETH_DARK"
    done
    dark ip link set "$VETH_DARK" up
    scan ip route add 203.0.113.0/24 via "$DARK_IP"
    scan ip -6 route add 2001:db8:2::/48 via "$DARK_IP6"
    # Packets to the darknet's non-local targets are dropped without an ICMP answer, as on a
    # darknet: forwarding off, and blackhole routes (IPv6 would otherwise answer "unreachable").
    dark sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
    dark ip route add blackhole 203.0.113.0/24
    dark ip -6 route add blackhole 2001:db8:2::/48
    SCAN_MAC=$(scan cat "/sys/class/net/$VETH_SCAN/address")
    DARK_MAC=$(dark cat "/sys/class/net/$VETH_DARK/address")
    # The multicast listener reports of the new addresses go out now, not during a capture.
    sleep 3
    # Static neighbours: no ARP or neighbour discovery in the captures, and no first probe that
    # waits for a resolution.
    scan ip neigh replace "$DARK_IP" lladdr "$DARK_MAC" dev "$VETH_SCAN" nud permanent
    scan ip -6 neigh replace "$DARK_IP6" lladdr "$DARK_MAC" dev "$VETH_SCAN" nud permanent
    dark ip neigh replace "$SCAN_IP" lladdr "$SCAN_MAC" dev "$VETH_DARK" nud permanent
    dark ip -6 neigh replace "$SCAN_IP6" lladdr "$SCAN_MAC" dev "$VETH_DARK" nud permanent
    sleep 1
}

# Starts a background process in a namespace and waits until its log shows `ready_pattern`.
start_bg() {
    local ns=$1 log=$2 ready_pattern=$3
    shift 3
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    BG_PIDS+=($!)
    local tries=0
    until grep -qE "$ready_pattern" "$log"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ] || ! kill -0 "${BG_PIDS[-1]}" 2>/dev/null; then
            echo "background process did not start: $*" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
}

stop_bg() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BG_PIDS=()
}

capture_start() {
    local name=$1 precision=${2:-micro}
    : >"$WORK/tcpdump.log"
    # Started without a shell function in between, so that $! is tcpdump itself.
    ip netns exec "$NS_DARK" tcpdump -i "$VETH_DARK" -s 0 -U -n -Z root --time-stamp-precision="$precision" \
        -w "$WORK/$name.pcap" >"$WORK/tcpdump.log" 2>&1 &
    TCPDUMP_PID=$!
    local tries=0
    until grep -q "listening on" "$WORK/tcpdump.log"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ]; then
            cat "$WORK/tcpdump.log" >&2
            return 1
        fi
        sleep 0.1
    done
}

capture_stop() {
    # Late answers and retransmissions still arrive in this second.
    sleep 1
    # SIGTERM, not SIGINT: background jobs of a non-interactive shell ignore SIGINT.
    kill -TERM "$TCPDUMP_PID"
    wait "$TCPDUMP_PID" || true
    TCPDUMP_PID=""
}

MANIFEST_ENTRIES=""

toml_string() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# Keeps a capture: copies it into OUT, checks the tool really sent something to port 5060, and
# adds its manifest entry.
keep() {
    local name=$1 tool=$2 version=$3 command=$4 notes=$5 also=${6:-}
    local file="$name.pcap"
    # Record the command with names that do not change from run to run.
    command=${command//"$WORK"/\$WORK}
    command=${command//"$VETH_SCAN"/\$VETH_SCAN}
    command=${command//"$SCAN_MAC"/\$SCAN_MAC}
    command=${command//"$DARK_MAC"/\$DARK_MAC}
    cp "$WORK/$name.pcap" "$OUT/$file"
    local packets sip_packets
    packets=$(tcpdump -r "$OUT/$file" -n 2>/dev/null | wc -l)
    sip_packets=$(tcpdump -r "$OUT/$file" -n "src net 198.51.100.0/24 or src net 2001:db8:1::/64" \
        2>/dev/null | grep -c '\.5060: ' || true)
    if [ "$sip_packets" -eq 0 ]; then
        echo "$name: $tool sent nothing to port 5060; see $WORK" >&2
        return 1
    fi
    printf '%-28s %-10s %4d packets (%d to port 5060)  %s\n' "$file" "$tool" "$packets" \
        "$sip_packets" "$version"
    MANIFEST_ENTRIES+="
[[capture]]
file = $(toml_string "$file")
tool = $(toml_string "$tool")
version = $(toml_string "$version")
command = $(toml_string "$command")
packets = $packets
notes = $(toml_string "$notes")
"
    if [ -n "$also" ]; then
        MANIFEST_ENTRIES+="also = [$also]
"
    fi
}

# Runs one tool from the scanner namespace under a time limit and keeps its capture.
# A tool that ends by timeout is fine (scanners wait for answers that never come); the check in
# `keep` catches a tool that sent nothing.
run_tool() {
    local name=$1 tool=$2 version=$3 limit=$4 notes=$5 also=$6
    shift 6
    echo "== $name: $*" >&2
    capture_start "$name" "${PRECISION:-micro}"
    scan timeout "$limit" "$@" >"$WORK/$name.out" 2>&1 </dev/null || true
    capture_stop
    keep "$name" "$tool" "$version" "$*" "$notes" "$also"
}

start_responder() {
    start_bg "$NS_DARK" "$WORK/responder.log" '^ready' \
        python3 "$HERE/sip_responder.py" --bind "$RESPONDER" --seconds 300
}

main() {
    for tool in tcpdump python3 sipvicious_svmap sipvicious_svwar sipvicious_svcrack nmap sipsak \
        sipp masscan zmap socat kamailio; do
        command -v "$tool" >/dev/null || { echo "missing tool: $tool (see README.md)" >&2; exit 1; }
    done
    setup_namespaces

    local svmap_v nmap_v sipsak_v sipp_v masscan_v zmap_v kamailio_v svwar_v svcrack_v
    svmap_v=$(version_of 'v[0-9]' sipvicious_svmap --version)
    svwar_v=$(version_of 'v[0-9]' sipvicious_svwar --version)
    svcrack_v=$(version_of 'v[0-9]' sipvicious_svcrack --version)
    nmap_v=$(version_of '^Nmap version' nmap --version)
    sipsak_v=$(version_of '^sipsak' sipsak -V)
    sipp_v=$(version_of 'SIPp v' sipp -v)
    sipp_v=${sipp_v#"${sipp_v%%[![:space:]]*}"}
    masscan_v=$(version_of '^Masscan version' masscan --version)
    zmap_v=$(version_of '^zmap' zmap --version)
    kamailio_v=$(version_of '^version:' kamailio -v)
    kamailio_v=${kamailio_v#version: }

    # --- SIPVicious: svmap against unanswered darknet addresses, as a darknet sees it.
    run_tool svmap-options svmap "$svmap_v" 30 \
        "OPTIONS (default method) to 8 darknet addresses; nothing answers" "" \
        sipvicious_svmap 203.0.113.48/29
    run_tool svmap-invite svmap "$svmap_v" 30 \
        "INVITE to 4 darknet addresses; nothing answers" "" \
        sipvicious_svmap -m INVITE 203.0.113.48/30
    run_tool svmap-register svmap "$svmap_v" 30 \
        "REGISTER to 4 darknet addresses (no Contact header in v0.3.x); nothing answers" "" \
        sipvicious_svmap -m REGISTER 203.0.113.48/30
    PRECISION=nano run_tool svmap-ipv6 svmap "$svmap_v" 30 \
        "OPTIONS over IPv6 to one darknet address; nanosecond pcap" "" \
        sipvicious_svmap -6 "$DARK_TARGET6"

    # --- Tools that need answers: the responder is a small registrar (sip_responder.py).
    start_responder
    run_tool svwar svwar "$svwar_v" 60 \
        "REGISTER enumeration of extensions 100-110 plus a random sanity-check extension; the responder answers 401 for 100, 101, 105 and 404 for the rest" "" \
        sipvicious_svwar -e100-110 "$RESPONDER"
    run_tool svcrack svcrack "$svcrack_v" 60 \
        "REGISTER password guessing for extension 100 with passwords 100-120; the responder challenges with 401 and accepts 110" "" \
        sipvicious_svcrack -u100 -r100-120 "$RESPONDER"
    run_tool sipsak sipsak "$sipsak_v" 20 \
        "one OPTIONS; the responder answers 200" "" \
        sipsak -s "sip:100@$RESPONDER"
    run_tool nmap-sip-methods nmap-nse "$nmap_v" 60 \
        "UDP port scan (two empty datagrams in nmap 7.93) then the sip-methods OPTIONS; the responder answers" '"nmap-probe"' \
        nmap -Pn -n -sU -p5060 --script sip-methods "$RESPONDER"
    run_tool nmap-sip-enum-users nmap-nse "$nmap_v" 120 \
        "UDP port scan probe then sip-enum-users REGISTERs: a random extension, then 100-110" '"nmap-probe"' \
        nmap -Pn -n -sU -p5060 --script sip-enum-users \
        --script-args sip-enum-users.minext=100,sip-enum-users.maxext=110 "$RESPONDER"
    printf '100\n105\n' >"$WORK/users.txt"
    printf 'admin\n1234\nsecret\n110\n' >"$WORK/passwords.txt"
    run_tool nmap-sip-brute nmap-nse "$nmap_v" 120 \
        "UDP port scan probe then sip-brute: a baduser check, then REGISTERs with digest credentials for users 100 and 105 (password lists in the command)" '"nmap-probe"' \
        nmap -Pn -n -sU -p5060 --script sip-brute \
        --script-args "userdb=$WORK/users.txt,passdb=$WORK/passwords.txt" "$RESPONDER"
    stop_bg

    # --- nmap's service/UDP probes.
    run_tool nmap-udp-probe nmap-probe "$nmap_v" 60 \
        "UDP port scan of 5060 on a darknet address: nmap 7.93 sends an EMPTY datagram (no SIP payload for 5060 in its nmap-payloads), then one retransmission; raw socket, random IP-ID and TTL" "" \
        nmap -Pn -n -sU -p5060 "$DARK_TARGET"
    run_tool nmap-udp-sv nmap-probe "$nmap_v" 60 \
        "UDP version detection of 5060 on a darknet address: the empty port-scan datagrams, then the UDP SIPOptions probe of nmap-service-probes (Call-ID 50000)" "" \
        nmap -Pn -n -sU -sV --version-light -p5060 "$DARK_TARGET"
    start_bg "$NS_DARK" "$WORK/socat.log" '.' \
        sh -c "echo listening; exec socat -u TCP-LISTEN:5060,bind=$TCP_OPEN,fork,reuseaddr OPEN:/dev/null"
    run_tool nmap-tcp-sv nmap-probe "$nmap_v" 120 \
        "SYN scan then -sV on an open but silent TCP 5060 (socat): NULL probe, then the TCP SIPOptions probe" "" \
        nmap -Pn -n -sS -sV --version-light -p5060 "$TCP_OPEN"
    stop_bg

    # --- Mass scanners with raw packets, addressed by MAC because they bypass the routing table.
    run_tool masscan masscan "$masscan_v" 30 \
        "UDP 5060 to 2 darknet addresses; masscan's built-in SIP OPTIONS payload" "" \
        masscan -pU:5060 203.0.113.50-203.0.113.51 --rate 10 --wait 2 -e "$VETH_SCAN" \
        --adapter-ip "$SCAN_IP" --adapter-mac "$SCAN_MAC" --router-mac "$DARK_MAC"
    # zmap's blacklist would exclude the documentation ranges; give it one that excludes nothing
    # the run targets.
    printf '192.0.2.0/24\n' >"$WORK/zmap-blacklist.conf"
    run_tool zmap-sip-options zmap "$zmap_v" 30 \
        "UDP 5060 to 8 darknet addresses with the sip_options.tpl template shipped in Debian's zmap examples" "" \
        zmap -M udp -p 5060 --probe-args=template:/usr/share/doc/zmap/examples/udp-probes/sip_options.tpl \
        -i "$VETH_SCAN" -S "$SCAN_IP" -G "$DARK_MAC" -b "$WORK/zmap-blacklist.conf" -r 20 -c 1 \
        -o "$WORK/zmap.csv" 203.0.113.64/29
    run_tool zmap-options7 zmap "$zmap_v" 30 \
        "UDP 5060 to 8 darknet addresses with the 7-byte payload OPTIONS (newer zmap ships it as sip_5060.pkt; 2.1.1 sends it with text:)" "" \
        zmap -M udp -p 5060 --probe-args=text:OPTIONS \
        -i "$VETH_SCAN" -S "$SCAN_IP" -G "$DARK_MAC" -b "$WORK/zmap-blacklist.conf" -r 20 -c 1 \
        -o "$WORK/zmap.csv" 203.0.113.72/29

    # --- Benign SIP: a SIPp call between its default UAC and UAS, and kamailio keepalives.
    start_bg "$NS_DARK" "$WORK/sipp-uas.log" '.' \
        sh -c "echo starting; exec sipp -sn uas -i $SIPP_UAS -p 5060 -m 2 -nostdin -timeout 60s"
    sleep 0.5
    run_tool sipp-call benign "$sipp_v" 60 \
        "SIPp default UAC (sipp -sn uac) placing 2 calls to a SIPp default UAS: INVITE, 100, 180, 200, ACK, BYE, 200" "" \
        sipp -sn uac -i "$SCAN_IP" -p 5060 -m 2 -r 1 -nostdin -timeout 50s "$SIPP_UAS:5060"
    stop_bg

    mkdir -p "$WORK/kamailio"
    printf '1 sip:%s:5060\n' "$KEEPALIVE_TARGET" >"$WORK/kamailio/dispatcher.list"
    cat >"$WORK/kamailio/kamailio.cfg" <<EOF
#!KAMAILIO
# A SIP proxy whose dispatcher pings its (dark) destination with OPTIONS every second.
debug=2
log_stderror=yes
children=1
listen=udp:$SCAN_IP:5060
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "$WORK/kamailio/dispatcher.list")
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "ds_probing_mode", 1)
request_route {
    sl_send_reply("404", "Not here");
}
EOF
    run_tool kamailio-keepalive benign "$kamailio_v" 6 \
        "kamailio dispatcher OPTIONS keepalives (ds_ping_interval 1 s, ds_probing_mode 1) to an unanswering destination, for 6 s" "" \
        kamailio -DD -E -f "$WORK/kamailio/kamailio.cfg" -P "$WORK/kamailio/kamailio.pid" \
        -Y "$WORK/kamailio" -w "$WORK/kamailio"

    # A pcapng copy of one capture, written by Wireshark's editcap when present, so the reader's
    # pcapng path is checked against a file a real tool wrote.
    if command -v editcap >/dev/null; then
        editcap -F pcapng "$OUT/sipsak.pcap" "$OUT/sipsak.pcapng"
    fi

    {
        echo "# Generated by regenerate.sh: one entry per capture file."
        echo "# tool: the expected attribution of the packets the scanner side (198.51.100.2 or"
        echo "# 2001:db8:1::2) sent to port 5060; 'benign' means no scanner. Packets from 203.0.113.x are"
        echo "# answers from the corpus's own responder. 'also' lists tools whose packets the file holds too."
        echo "schema = 1"
        printf '%s' "$MANIFEST_ENTRIES"
    } >"$OUT/manifest.toml"
    echo "corpus written to $OUT" >&2
}

main "$@"
