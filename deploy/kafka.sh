#!/usr/bin/env bash
# Runs a single-node Apache Kafka broker (KRaft, broker and controller in one
# JVM) on 127.0.0.1 for development, tests and benchmarks. The Kafka release
# is pinned in deploy/kafka/pom.xml and its jars come from Maven Central.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/kafka.sh COMMAND [ARGS...]

Commands:
  start            Install Java and Maven if missing, resolve the Kafka jars once,
                   format the storage once and start the broker in the background.
                   Waits until the broker returns metadata, then prints the
                   bootstrap address (host:port) on stdout. Does nothing but print
                   the address when this data directory's broker is already up.
  stop             Stop the broker with SIGTERM, then SIGKILL after
                   KAFKA_STOP_TIMEOUT seconds. Exits 0 when it is not running.
  status           Exit 0 when the broker runs and returns metadata, 1 when it
                   does not run, 2 when its process runs but does not respond.
  kill             Send SIGKILL at once, as a crash would. The data is kept.
  perf-test ARGS   Run org.apache.kafka.tools.ProducerPerformance with ARGS, e.g.
                   --topic t --num-records 100000 --record-size 512
                   --throughput -1 --producer-props bootstrap.servers=127.0.0.1:9092
  reset            Stop the broker and delete KAFKA_DATA_DIR.

Environment:
  KAFKA_PORT             PLAINTEXT listener port on 127.0.0.1 (default 9092)
  KAFKA_CONTROLLER_PORT  KRaft controller listener port on 127.0.0.1 (default 9093)
  KAFKA_DATA_DIR         server.properties, log segments, pid file and
                         logs/server.log (default <repo>/.run/kafka)
  HITL_KAFKA_HOME        jar cache (default <repo>/.cache/kafka)
  KAFKA_HEAP_OPTS        broker JVM heap flags (default "-Xms256m -Xmx512m")
  KAFKA_START_TIMEOUT    seconds that start waits for metadata (default 90)
  KAFKA_STOP_TIMEOUT     seconds that stop waits after SIGTERM (default 30)
EOF
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$script_dir/.." && pwd)
pom=$script_dir/kafka/pom.xml
log4j_config=$script_dir/kafka/log4j2.properties

host=127.0.0.1
kafka_port_from_env=${KAFKA_PORT:+yes}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_DATA_DIR=${KAFKA_DATA_DIR:-$repo_dir/.run/kafka}
HITL_KAFKA_HOME=${HITL_KAFKA_HOME:-$repo_dir/.cache/kafka}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}

# The first line of every server.properties this script writes. reset deletes
# a data directory only when its server.properties starts with it.
config_header="# Written by deploy/kafka.sh. It is rewritten on every start."

java_bin=
python_bin=
apt_updated=false

say() { echo "kafka.sh: $*" >&2; }
die() { echo "kafka.sh: error: $*" >&2; exit 1; }

check_settings() {
    local name value
    for name in KAFKA_PORT KAFKA_CONTROLLER_PORT; do
        value=${!name}
        if ! [[ $value =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
            die "$name=$value is not a TCP port; set it to a number from 1 to 65535"
        fi
    done
    if ((KAFKA_PORT == KAFKA_CONTROLLER_PORT)); then
        die "KAFKA_PORT and KAFKA_CONTROLLER_PORT are both $KAFKA_PORT; set them to different ports"
    fi
    for name in KAFKA_START_TIMEOUT KAFKA_STOP_TIMEOUT; do
        value=${!name}
        if ! [[ $value =~ ^[0-9]+$ ]] || ((value < 1)); then
            die "$name=$value is not a positive number of seconds"
        fi
    done

    # The paths end up in server.properties, in the JVM's command line and in
    # the pid check, so they must be absolute. stop, kill, status and reset
    # do not create a missing data directory.
    KAFKA_DATA_DIR=$(realpath -m -- "$KAFKA_DATA_DIR")
    HITL_KAFKA_HOME=$(realpath -m -- "$HITL_KAFKA_HOME")

    libs_dir=$HITL_KAFKA_HOME/libs
    libs_stamp=$HITL_KAFKA_HOME/libs.pom.sha256
    config=$KAFKA_DATA_DIR/server.properties
    log_dirs=$KAFKA_DATA_DIR/data
    log_file=$KAFKA_DATA_DIR/logs/server.log
    pid_file=$KAFKA_DATA_DIR/kafka.pid
    bootstrap=$host:$KAFKA_PORT
}

# Serializes start, stop, kill and reset on one data directory, so two test
# runs that call start at the same time get one broker.
lock_data_dir() {
    mkdir -p "$KAFKA_DATA_DIR" || die "cannot create KAFKA_DATA_DIR=$KAFKA_DATA_DIR; set KAFKA_DATA_DIR to a writable directory"
    exec 9>"$KAFKA_DATA_DIR/kafka.sh.lock"
    flock -w 180 9 || die "another kafka.sh has held $KAFKA_DATA_DIR/kafka.sh.lock for 180 s; wait for it or check for a stuck kafka.sh process"
}

# ---------------------------------------------------------------- install

apt_install() {
    if ((EUID != 0)); then
        die "$* missing and kafka.sh runs as uid $EUID; run 'sudo apt-get install -y $*' and retry"
    fi
    command -v apt-get >/dev/null \
        || die "$* missing and apt-get not found; install a Java 17+ runtime and Maven by hand and retry"
    if [[ $apt_updated == false ]]; then
        say "running apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 \
            || die "apt-get update failed; check the Debian package mirror and retry"
        apt_updated=true
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 \
        || die "apt-get install $* failed; install them by hand and retry"
}

java_major_version() {
    local version
    version=$("$1" -XshowSettings:properties -version 2>&1 \
        | awk -F' = ' '/java.specification.version/ {print $2}')
    # Java 8 reports 1.8, so this prints 1 for it and ensure_java rejects it.
    echo "${version%%.*}"
}

# Sets java_bin to a Java 17+ launcher, installing one when there is none.
ensure_java() {
    local candidate major
    for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" \
        /usr/lib/jvm/java-17-openjdk-*/bin/java; do
        [[ -n $candidate && -x $candidate ]] || continue
        major=$(java_major_version "$candidate")
        if [[ $major =~ ^[0-9]+$ ]] && ((major >= 17)); then
            java_bin=$candidate
            return
        fi
    done
    apt_install openjdk-17-jre-headless
    for candidate in /usr/lib/jvm/java-17-openjdk-*/bin/java; do
        if [[ -x $candidate ]]; then
            java_bin=$candidate
            return
        fi
    done
    die "openjdk-17-jre-headless installed but no /usr/lib/jvm/java-17-openjdk-*/bin/java found; set JAVA_HOME to a Java 17+ install"
}

# Copies the runtime jars of deploy/kafka/pom.xml into $libs_dir, unless they
# were already copied for a pom with the same SHA-256.
ensure_jars() {
    local pom_hash staging mvn_log
    pom_hash=$(sha256sum "$pom" | cut -d' ' -f1)
    if [[ -d $libs_dir && -f $libs_stamp && $(<"$libs_stamp") == "$pom_hash" ]]; then
        return
    fi

    mkdir -p "$HITL_KAFKA_HOME" || die "cannot create HITL_KAFKA_HOME=$HITL_KAFKA_HOME; set HITL_KAFKA_HOME to a writable directory"
    exec 8>"$HITL_KAFKA_HOME/resolve.lock"
    flock -w 600 8 || die "another kafka.sh has been resolving jars into $HITL_KAFKA_HOME for 600 s; wait for it or delete $HITL_KAFKA_HOME"
    # A concurrent kafka.sh may have finished the same resolution meanwhile.
    if [[ -d $libs_dir && -f $libs_stamp && $(<"$libs_stamp") == "$pom_hash" ]]; then
        exec 8>&-
        return
    fi
    if is_running; then
        die "$pom changed since the jars in $libs_dir were resolved, and the broker (pid $(<"$pid_file")) still runs from them; run 'deploy/kafka.sh stop' first"
    fi

    if ! command -v mvn >/dev/null; then
        apt_install maven
        command -v mvn >/dev/null || die "package maven installed but mvn is not on PATH=$PATH; add /usr/bin to PATH and retry"
    fi
    say "resolving Kafka jars from $pom into $libs_dir"
    staging=$HITL_KAFKA_HOME/libs.partial
    rm -rf "$staging"
    mvn_log=$HITL_KAFKA_HOME/resolve.log
    if ! mvn -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$staging" >"$mvn_log" 2>&1; then
        rm -rf "$staging"
        grep -E '^\[(ERROR|WARNING)\]' "$mvn_log" | head -n 20 >&2 || true
        die "mvn dependency:copy-dependencies failed for $pom (full output in $mvn_log); check that Maven Central is reachable and retry"
    fi
    compgen -G "$staging/kafka_2.13-*.jar" >/dev/null \
        || die "mvn finished but $staging has no kafka_2.13 jar; check the dependencies in $pom"

    # The stamp is written last, so an interrupted run resolves again next time.
    rm -rf "$libs_dir" "$libs_stamp"
    mv "$staging" "$libs_dir"
    echo "$pom_hash" >"$libs_stamp"
    exec 8>&-
}

kafka_version() {
    local jar
    for jar in "$libs_dir"/kafka_2.13-*.jar; do
        jar=${jar##*/kafka_2.13-}
        echo "${jar%.jar}"
        return
    done
}

# ---------------------------------------------------------------- broker

# Succeeds when the pid file names a live process that runs kafka.Kafka with
# this data directory's server.properties. A pid reused by another program,
# or a zombie, whose cmdline is empty, does not count.
is_running() {
    local pid cmdline
    [[ -f $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    [[ $cmdline == *kafka.Kafka* && $cmdline == *"$config"* ]]
}

# Sets python_bin for probe_metadata, which needs only the standard library.
find_python() {
    if [[ -x $repo_dir/.venv/bin/python ]]; then
        python_bin=$repo_dir/.venv/bin/python
    elif command -v python3 >/dev/null; then
        python_bin=$(command -v python3)
    else
        die "no Python found to probe the broker; install python3 (apt-get install -y python3) and retry"
    fi
}

# Sends one Metadata request (version 4, the oldest that Kafka 4.x still
# accepts) and succeeds when the response lists a broker on $KAFKA_PORT.
# Kafka 4.1 processes requests on the PLAINTEXT listener only after the broker
# has registered with the controller and been unfenced, so success means
# clients can produce.
probe_metadata() {
    "$python_bin" - "$host" "$KAFKA_PORT" <<'PY'
import socket
import struct
import sys

host, port = sys.argv[1], int(sys.argv[2])
client_id = b"kafka.sh"
# Request header v1: api_key=3 (Metadata), api_version=4, correlation_id,
# client_id. Body v4: an empty topic array and allow_auto_topic_creation=false.
body = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id + struct.pack(">ib", 0, 0)


def read_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data += chunk
    return data


try:
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        response = read_exact(sock, size)
except OSError:
    sys.exit(1)

correlation_id, _throttle_ms, broker_count = struct.unpack_from(">iii", response, 0)
offset = 12
for _ in range(broker_count):
    (_node_id,) = struct.unpack_from(">i", response, offset)
    (host_len,) = struct.unpack_from(">h", response, offset + 4)
    offset += 6 + host_len
    (broker_port,) = struct.unpack_from(">i", response, offset)
    (rack_len,) = struct.unpack_from(">h", response, offset + 4)
    offset += 6 + max(rack_len, 0)
    if correlation_id == 7 and broker_port == port:
        sys.exit(0)
sys.exit(1)
PY
}

# Points KAFKA_PORT at the port in the running broker's server.properties,
# which wins over the environment until the broker restarts.
use_running_port() {
    local port
    port=$(sed -n 's|^advertised.listeners=PLAINTEXT://[^:]*:\([0-9]*\)$|\1|p' "$config")
    [[ -n $port ]] || die "no advertised.listeners=PLAINTEXT://host:port line in $config; run 'deploy/kafka.sh stop' and start again"
    if [[ $port != "$KAFKA_PORT" && -n $kafka_port_from_env ]]; then
        say "note: the running broker listens on port $port, not KAFKA_PORT=$KAFKA_PORT; run stop and start to change the port"
    fi
    KAFKA_PORT=$port
    bootstrap=$host:$port
}

port_in_use() {
    (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

write_config() {
    mkdir -p "$log_dirs" "$KAFKA_DATA_DIR/logs"
    cat >"$config" <<EOF
$config_header
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$host:$KAFKA_PORT,CONTROLLER://$host:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$host:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$log_dirs

# One broker, so every internal topic gets one replica.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# After SIGKILL the controller keeps the dead broker's registration until its
# session times out (9 s by default) and only then lets the restarted broker
# register. Broker and controller share this JVM, so short heartbeats are cheap.
# They cut kill-then-start from about 13 s to 7 s (measured on a 2-core VM).
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000

# Producing to a misspelled topic fails instead of creating it.
auto.create.topics.enable=false
# Tests start one consumer per group and should not wait 3 s for others.
group.initial.rebalance.delay.ms=0
EOF
}

# Formats $log_dirs with a new random cluster id, unless an earlier start did.
# The quorum is static (controller.quorum.voters), so changing
# KAFKA_CONTROLLER_PORT later needs no new format.
format_storage_once() {
    local cluster_id _
    [[ -f $log_dirs/meta.properties ]] && return

    # A Kafka cluster id is 16 random bytes in unpadded URL-safe base64. Kafka's
    # own generator skips ids that start with '-' because the CLI would read
    # them as an option, and so does this loop.
    for _ in 1 2 3 4 5 6 7 8; do
        cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
        [[ $cluster_id != -* ]] && break
    done
    say "formatting $log_dirs with cluster id $cluster_id"
    "$java_bin" -Xmx256m -Dlog4j2.configurationFile="$log4j_config" -Dkafka.root.level=WARN \
        -cp "$libs_dir/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$config" >&2 \
        || die "kafka.tools.StorageTool format failed for $log_dirs (output above); run 'deploy/kafka.sh reset' and retry"
}

cmd_start() {
    local pid started elapsed deadline
    check_settings
    find_python
    lock_data_dir

    if is_running; then
        pid=$(<"$pid_file")
        use_running_port
        if probe_metadata; then
            say "broker already running (pid $pid, data in $KAFKA_DATA_DIR)"
            if [[ -f $libs_stamp && $(sha256sum "$pom" | cut -d' ' -f1) != "$(<"$libs_stamp")" ]]; then
                say "note: $pom changed since this broker started; run stop and start to use it"
            fi
            echo "$bootstrap"
            return
        fi
        say "broker pid $pid is running but not yet answering on $bootstrap; waiting for it"
    else
        rm -f "$pid_file"
        local port
        for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
            if port_in_use "$port"; then
                die "$host:$port is already in use by a process not started from $KAFKA_DATA_DIR; stop it, or set KAFKA_PORT and KAFKA_CONTROLLER_PORT to free ports"
            fi
        done

        ensure_java
        ensure_jars
        write_config
        format_storage_once

        # The broker must not inherit the lock descriptors 8 and 9, or it would
        # hold the data directory lock for its whole life.
        echo "---- kafka.sh start $(date -u +%Y-%m-%dT%H:%M:%SZ), Kafka $(kafka_version)" >>"$log_file"
        # KAFKA_HEAP_OPTS is split on spaces on purpose because it contains
        # several flags.
        # shellcheck disable=SC2086
        nohup "$java_bin" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$log4j_config" \
            -cp "$libs_dir/*" kafka.Kafka "$config" \
            </dev/null >>"$log_file" 2>&1 8>&- 9>&- &
        pid=$!
        echo "$pid" >"$pid_file"
        say "started Kafka $(kafka_version) broker pid $pid, log in $log_file"
    fi

    started=$SECONDS
    deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! is_running; then
            # Right after the fork, /proc still shows the shell's cmdline until
            # nohup has exec'd java.
            if kill -0 "$pid" 2>/dev/null && ((SECONDS - started < 5)); then
                sleep 0.2
                continue
            fi
            rm -f "$pid_file"
            tail -n 30 "$log_file" >&2 || true
            die "broker pid $pid exited during startup (last log lines above, full log in $log_file)"
        fi
        if probe_metadata; then
            elapsed=$((SECONDS - started))
            say "broker ready on $bootstrap after ${elapsed}s"
            echo "$bootstrap"
            return
        fi
        sleep 0.5
    done
    die "broker pid $pid did not return metadata on $bootstrap within ${KAFKA_START_TIMEOUT}s; it is left running, see $log_file, then run 'deploy/kafka.sh stop' or raise KAFKA_START_TIMEOUT"
}

# Succeeds when pid $1 is gone or a zombie. A dying JVM loses its cmdline
# before the kernel has closed its sockets, so is_running alone would report a
# killed broker as gone while its ports are still bound.
process_gone() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    # The state is the first field after the parenthesized command name.
    state=${stat##*) }
    [[ ${state%% *} == Z ]]
}

# Waits up to $2 seconds for pid $1 to exit.
wait_for_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        process_gone "$pid" && return 0
        sleep 0.1
    done
    process_gone "$pid"
}

cmd_stop() {
    check_settings
    if [[ ! -d $KAFKA_DATA_DIR ]]; then
        say "broker not running ($KAFKA_DATA_DIR does not exist)"
        return
    fi
    lock_data_dir
    stop_broker
}

stop_broker() {
    local pid
    if ! is_running; then
        rm -f "$pid_file"
        say "broker not running (data in $KAFKA_DATA_DIR)"
        return
    fi
    pid=$(<"$pid_file")
    say "stopping broker pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for_exit "$pid" "$KAFKA_STOP_TIMEOUT"; then
        say "broker pid $pid still running ${KAFKA_STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for_exit "$pid" 10 || die "broker pid $pid survived SIGKILL for 10 s; check 'ps -p $pid'"
    fi
    rm -f "$pid_file"
    say "broker stopped"
}

cmd_kill() {
    local pid
    check_settings
    if [[ ! -d $KAFKA_DATA_DIR ]]; then
        say "broker not running ($KAFKA_DATA_DIR does not exist)"
        return
    fi
    lock_data_dir
    if ! is_running; then
        rm -f "$pid_file"
        say "broker not running (data in $KAFKA_DATA_DIR)"
        return
    fi
    pid=$(<"$pid_file")
    kill -KILL "$pid" 2>/dev/null || true
    # Wait until the kernel has closed the listeners, so an immediate start
    # can bind the same ports.
    wait_for_exit "$pid" 10 || die "broker pid $pid survived SIGKILL for 10 s; check 'ps -p $pid'"
    rm -f "$pid_file"
    say "broker pid $pid killed with SIGKILL; data kept in $KAFKA_DATA_DIR"
}

cmd_status() {
    local pid
    check_settings
    find_python
    if ! is_running; then
        say "broker not running (data in $KAFKA_DATA_DIR)"
        return 1
    fi
    pid=$(<"$pid_file")
    use_running_port
    if ! probe_metadata; then
        say "broker pid $pid is running but does not respond to metadata requests on $bootstrap; see $log_file"
        return 2
    fi
    say "broker running (pid $pid, Kafka $(kafka_version), data in $KAFKA_DATA_DIR)"
    echo "$bootstrap"
}

cmd_perf_test() {
    check_settings
    ensure_java
    ensure_jars
    exec "$java_bin" -Xmx512m -Dlog4j2.configurationFile="$log4j_config" -Dkafka.root.level=WARN \
        -cp "$libs_dir/*" org.apache.kafka.tools.ProducerPerformance "$@"
}

cmd_reset() {
    check_settings
    if [[ ! -d $KAFKA_DATA_DIR ]]; then
        say "nothing to delete: $KAFKA_DATA_DIR does not exist"
        return
    fi
    lock_data_dir
    if [[ -f $config ]] && [[ $(head -n 1 "$config") != "$config_header" ]]; then
        die "$config was not written by kafka.sh, so KAFKA_DATA_DIR=$KAFKA_DATA_DIR may not be a kafka.sh data directory; delete it by hand if that is intended"
    fi
    if [[ ! -f $config ]] && [[ -n $(find "$KAFKA_DATA_DIR" -mindepth 1 -maxdepth 1 ! -name kafka.sh.lock ! -name kafka.lock -print -quit) ]]; then
        die "KAFKA_DATA_DIR=$KAFKA_DATA_DIR has files but no server.properties from kafka.sh; delete it by hand if that is intended"
    fi
    stop_broker
    rm -rf "$KAFKA_DATA_DIR"
    say "deleted $KAFKA_DATA_DIR"
}

main() {
    local command=${1:-}
    (($# > 0)) && shift
    case $command in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        kill) cmd_kill ;;
        perf-test) cmd_perf_test "$@" ;;
        reset) cmd_reset ;;
        -h | --help | help) usage ;;
        "") usage >&2; exit 64 ;;
        *) usage >&2; die "unknown command '$command'" ;;
    esac
}

# Exiting on the same line keeps bash from reading on into this file if it was
# edited while the command ran.
main "$@"; exit
