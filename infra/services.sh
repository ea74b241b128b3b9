#!/usr/bin/env bash
# Local services for darwin-notify's integration tier, all on 127.0.0.1:
#   PostgreSQL primary + streaming hot standby (the read-only replica the pipeline reads),
#   a separate PostgreSQL cluster for the notification store and Dagster's storage,
#   a single-node Kafka (KRaft) broker, and the SendGrid / Twilio / Mandrill-compatible sinks.
#
# Usage: infra/services.sh up|down|status|env|kafka-stop [--kill]|kafka-start
#   eval "$(infra/services.sh env)"   exports the connection settings.
#
# State (data, logs, pid files) lives in $DARWIN_NOTIFY_SERVICES_DIR, outside the checkout:
# PostgreSQL runs as user postgres, who may not be able to enter a private checkout folder.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

DIR=${DARWIN_NOTIFY_SERVICES_DIR:-/var/tmp/darwin-notify-services}
LOG_DIR=$DIR/logs
PG_DIR=$DIR/pg
SOCKET_DIR=$PG_DIR/run
KAFKA_DIR=$DIR/kafka
KAFKA_PID_FILE=$KAFKA_DIR/kafka.pid
SINK_DIR=$DIR/sinks

PRIMARY_PORT=${DARWIN_NOTIFY_PRIMARY_PORT:-55432}
REPLICA_PORT=${DARWIN_NOTIFY_REPLICA_PORT:-55433}
STORE_PORT=${DARWIN_NOTIFY_STORE_PORT:-55434}
KAFKA_PORT=${DARWIN_NOTIFY_KAFKA_PORT:-59092}
KAFKA_CONTROLLER_PORT=${DARWIN_NOTIFY_KAFKA_CONTROLLER_PORT:-59093}
SENDGRID_PORT=${DARWIN_NOTIFY_SENDGRID_PORT:-58025}
SMS_PORT=${DARWIN_NOTIFY_SMS_PORT:-58026}
MANDRILL_PORT=${DARWIN_NOTIFY_MANDRILL_PORT:-58027}
SINK_KINDS=(sendgrid sms mandrill)
TIMEOUT=${DARWIN_NOTIFY_SERVICES_TIMEOUT:-90}

PIPELINE_ROLE=darwin_notify
SLOT=replica1
# libgssapi-krb5-2, libkrb5-3 and libltdl7: what Microsoft's ODBC Driver 18 (PyPI
# mssql-python-odbc, registered by storage/odbc_driver.py) links besides unixODBC.
APT_PACKAGES=(postgresql postgresql-contrib unixodbc odbc-postgresql libgssapi-krb5-2 libkrb5-3 libltdl7)

KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_CACHE=${DARWIN_NOTIFY_KAFKA_CACHE:-${HOME:-/root}/.cache/darwin-notify/kafka-$KAFKA_VERSION}

# The sinks need only the standard library, so without the project's venv python3 will do.
PYTHON=${DARWIN_NOTIFY_PYTHON:-.venv/bin/python}
if [[ $PYTHON != */* ]]; then
    PYTHON=$(command -v "$PYTHON" || echo "$PYTHON")
elif [[ $PYTHON != /* ]]; then
    PYTHON=$REPO_ROOT/$PYTHON
fi
if [[ -z ${DARWIN_NOTIFY_PYTHON:-} && ! -x $PYTHON ]]; then
    PYTHON=$(command -v python3 || echo "$PYTHON")
fi

# ---------------------------------------------------------------------------------- helpers

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
since() { local d=$(($(now_ms) - $1)); printf '%d.%ds' $((d / 1000)) $((d % 1000 / 100)); }

# Health failure: which service, which port, which log; the log's tail saves a round trip.
fail_service() {
    local name=$1 port=$2 log=$3 why=$4
    {
        printf '[services] FAILED: %s on 127.0.0.1:%s: %s\n' "$name" "$port" "$why"
        printf '[services] log: %s\n' "$log"
        if [[ -s $log ]]; then
            printf '[services] last lines of %s:\n' "$log"
            tail -n 25 "$log" | sed 's/^/    /'
        fi
    } >&2
    exit 1
}

port_open() { timeout 1 bash -c ": </dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# True when something else listens on the port; a moment's grace covers a process of ours
# that is still exiting.
port_taken() {
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        port_open "$1" || return 1
        sleep 0.3
    done
}

http_ok() {
    # shellcheck disable=SC2016
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3
        IFS= read -r line <&3
        [[ $line == HTTP/1.?" 200"* ]]' _ "$1" "$2" 2>/dev/null
}

# Runs a command as the PostgreSQL owner. From / because the caller's cwd may be a folder
# that user postgres cannot enter.
as_pg() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

pg_chown() { if ((EUID == 0)); then chown postgres:postgres "$@"; fi; }

pg_owned_dir() {
    mkdir -p "$1"
    pg_chown "$1"
    chmod 0700 "$1"
}

pg_log_file() {
    local log=$LOG_DIR/$1.log
    touch "$log"
    pg_chown "$log"
    echo "$log"
}

psql_admin() {
    local port=$1 db=$2
    shift 2
    PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

# An exited process not yet reaped counts as gone, but only once all its threads have
# exited: after SIGKILL a JVM's main thread is a zombie while the others still hold its sockets.
pid_alive() {
    [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
    local state threads
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null || true)
    threads=$(sed -n 's/^Threads:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null || true)
    [[ $state != Z || ${threads:-1} -gt 1 ]]
}

wait_gone() {
    local pid=$1 tenths=$2 i
    for ((i = 0; i < tenths; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    ! pid_alive "$pid"
}

# The pid in a pid file, if that process is alive and is the expected command.
running_pid() {
    local file=$1 pattern=$2 pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"; then
        echo "$pid"
        return 0
    fi
    return 1
}

# Starts a command detached in its own session; the session leader writes its pid file.
launch() {
    local pid_file=$1 log=$2
    shift 2
    rm -f "$pid_file"
    printf '\n===== %s starting: %s\n' "$(date -Is)" "$*" >>"$log"
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pid_file" "$@" \
        </dev/null >>"$log" 2>&1 9>&- &
    local i
    for i in $(seq 50); do
        [[ -s $pid_file ]] && return 0
        sleep 0.02
    done
    return 1
}

stop_pid_file() {
    local name=$1 file=$2 pattern=$3 signal=${4:-TERM} pid
    if ! pid=$(running_pid "$file" "$pattern"); then
        rm -f "$file"
        say "$name: not running"
        return 0
    fi
    local t0
    t0=$(now_ms)
    kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 300; then
        say "$name: still running after 30s, sending KILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 50; then
            printf '[services] ERROR: %s: pid %s did not exit\n' "$name" "$pid" >&2
            return 1
        fi
    fi
    rm -f "$file"
    say "$name: stopped pid $pid ($(since "$t0"))"
}

# ---------------------------------------------------------------------------- prerequisites

find_pg_bin() {
    if [[ -n ${DARWIN_NOTIFY_PG_BIN:-} ]]; then
        PG_BIN=$DARWIN_NOTIFY_PG_BIN
        return
    fi
    PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
        sort -V | tail -n 1)
    [[ -n $PG_BIN && -x $PG_BIN/initdb ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
}

ensure_packages() {
    local missing=() p t0
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    ((EUID == 0)) || die "missing packages ${missing[*]}: run as root, or install them first"
    t0=$(now_ms)
    say "apt: installing ${missing[*]} (log: $LOG_DIR/apt.log)"
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    } >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get failed; see $LOG_DIR/apt.log"
    say "apt: done ($(since "$t0"))"
}

ensure_odbc_driver() {
    command -v odbcinst >/dev/null || die "odbcinst not found (package unixodbc)"
    if odbcinst -q -d 2>/dev/null | grep -qx '\[PostgreSQL Unicode\]'; then
        return 0
    fi
    local driver setup ini
    driver=$(dpkg -L odbc-postgresql 2>/dev/null | grep '/psqlodbcw\.so$' | head -n 1)
    setup=$(dpkg -L odbc-postgresql 2>/dev/null | grep '/libodbcpsqlS\.so$' | head -n 1)
    [[ -n $driver ]] || die "psqlODBC driver library psqlodbcw.so not found (package odbc-postgresql)"
    ini=$(mktemp)
    printf '[PostgreSQL Unicode]\nDescription=PostgreSQL ODBC driver (Unicode version)\nDriver=%s\n' \
        "$driver" >"$ini"
    [[ -n $setup ]] && printf 'Setup=%s\n' "$setup" >>"$ini"
    odbcinst -i -d -f "$ini" >/dev/null
    rm -f "$ini"
    odbcinst -q -d | grep -qx '\[PostgreSQL Unicode\]' || die "could not register ODBC driver 'PostgreSQL Unicode'"
    say "odbc: registered driver 'PostgreSQL Unicode' ($driver)"
}

prepare_state_dir() {
    if [[ ! -d $DIR ]]; then
        mkdir -p "$DIR"
        chmod 0755 "$DIR"
    fi
    mkdir -p "$LOG_DIR" "$KAFKA_DIR" "$SINK_DIR"
}

prepare_pg_dirs() {
    if ((EUID == 0)); then
        id postgres >/dev/null 2>&1 || die "user postgres does not exist (package postgresql-common)"
        as_pg test -x "$DIR" ||
            die "user postgres cannot enter $DIR; set DARWIN_NOTIFY_SERVICES_DIR to a folder outside private directories"
    fi
    pg_owned_dir "$PG_DIR"
    pg_owned_dir "$SOCKET_DIR"
}

# ------------------------------------------------------------------------------- PostgreSQL

pg_running() { [[ -f $1/postmaster.pid ]] && as_pg "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1; }

pg_system_id() {
    as_pg "$PG_BIN/pg_controldata" -D "$1" 2>/dev/null |
        sed -n 's/^Database system identifier: *//p'
}

pg_stop() {
    local name=$1 data=$PG_DIR/$1 pid t0
    if ! pg_running "$data"; then
        say "$name: not running"
        return 0
    fi
    t0=$(now_ms)
    pid=$(head -n 1 "$data/postmaster.pid")
    if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1; then
        say "$name: fast shutdown timed out, using immediate"
        as_pg "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    # pg_ctl returns once postmaster.pid is gone, a moment before the process itself.
    if ! wait_gone "$pid" 100; then
        printf '[services] ERROR: %s: postmaster pid %s did not exit\n' "$name" "$pid" >&2
        return 1
    fi
    say "$name: stopped pid $pid ($(since "$t0"))"
}

# Settings that follow the environment (ports, paths) are rewritten on every `up`;
# returns 1 when the file was already up to date.
pg_write_runtime_conf() {
    local data=$1 port=$2 conf=$1/darwin_notify.conf new line
    shift 2
    new=$(
        echo "# Written by infra/services.sh on every start."
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$SOCKET_DIR'"
        for line in "$@"; do echo "$line"; done
    )
    if [[ -f $conf && $(<"$conf") == "$new" ]]; then
        return 1
    fi
    printf '%s\n' "$new" >"$conf"
    pg_chown "$conf"
}

pg_port_of_running() { sed -n 4p "$1/postmaster.pid" 2>/dev/null; }

# A cluster still running with an older port setting is restarted with the current one.
pg_running_on() {
    local name=$1 port=$2 data=$PG_DIR/$1 actual
    pg_running "$data" || return 1
    actual=$(pg_port_of_running "$data")
    [[ $actual == "$port" ]] && return 0
    say "$name: running on port $actual, restarting on $port"
    pg_stop "$name" || die "$name: could not stop"
    return 1
}

pg_initdb() {
    local name=$1 data=$PG_DIR/$1 log
    log=$(pg_log_file "$name")
    if [[ -d $data ]]; then
        if pg_running "$data"; then pg_stop "$name" || die "$name: could not stop"; fi
        rm -rf "$data"
    fi
    pg_owned_dir "$data"
    as_pg "$PG_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >>"$log" 2>&1 ||
        die "$name: initdb failed; log: $log"
    {
        echo ""
        echo "# darwin-notify local services"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "track_io_timing = on"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        cat
        echo "include 'darwin_notify.conf'"
    } >>"$data/postgresql.conf"
}

pg_start() {
    local name=$1 port=$2 data=$PG_DIR/$1 log
    log=$(pg_log_file "$name")
    if port_taken "$port"; then
        fail_service "$name" "$port" "$log" "port is already in use by another process"
    fi
    printf '\n===== %s starting\n' "$(date -Is)" >>"$log"
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t "$TIMEOUT" start >/dev/null 2>&1 9>&- ||
        fail_service "$name" "$port" "$log" "pg_ctl start failed or timed out after ${TIMEOUT}s"
    pg_wait_ready "$name" "$port"
}

pg_wait_ready() {
    local name=$1 port=$2 deadline
    deadline=$((SECONDS + TIMEOUT))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2; do
        ((SECONDS < deadline)) ||
            fail_service "$name" "$port" "$LOG_DIR/$name.log" "not accepting connections after ${TIMEOUT}s"
        sleep 0.2
    done
}

primary_hba() {
    cat <<EOF
# The pipeline role may only read from the standby: pg_hba.conf is not replicated,
# so these lines refuse it here and nowhere else.
host    all          $PIPELINE_ROLE  127.0.0.1/32  reject
local   all          $PIPELINE_ROLE                reject
host    all          $PIPELINE_ROLE  ::1/128       reject
local   all          all                           trust
host    all          all             127.0.0.1/32  trust
host    all          all             ::1/128       trust
local   replication  postgres                      trust
host    replication  postgres        127.0.0.1/32  trust
EOF
}

standby_hba() {
    cat <<EOF
local   all          all                           trust
host    all          all             127.0.0.1/32  trust
host    all          all             ::1/128       trust
local   replication  postgres                      trust
host    replication  postgres        127.0.0.1/32  trust
EOF
}

up_primary() {
    local name=primary data=$PG_DIR/primary ready=$PG_DIR/primary.ready t0
    t0=$(now_ms)
    if [[ -f $ready ]] && pg_running_on "$name" "$PRIMARY_PORT"; then
        pg_wait_ready "$name" "$PRIMARY_PORT"
        say "$name: already running on 127.0.0.1:$PRIMARY_PORT"
        return 0
    fi
    local fresh=0
    if [[ ! -f $ready ]]; then
        fresh=1
        pg_initdb "$name" <<EOF
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
EOF
        primary_hba >"$data/pg_hba.conf"
    fi
    pg_write_runtime_conf "$data" "$PRIMARY_PORT" || true
    pg_start "$name" "$PRIMARY_PORT"
    if ((fresh)); then
        psql_admin "$PRIMARY_PORT" postgres >>"$LOG_DIR/$name.log" 2>&1 <<EOF ||
CREATE ROLE $PIPELINE_ROLE LOGIN;
-- pg_stat_wal_receiver shows its status and timestamps only to this role's members.
GRANT pg_read_all_stats TO $PIPELINE_ROLE;
CREATE DATABASE darwin;
\connect darwin
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
GRANT USAGE ON SCHEMA public TO $PIPELINE_ROLE;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON TABLES TO $PIPELINE_ROLE;
EOF
            fail_service "$name" "$PRIMARY_PORT" "$LOG_DIR/$name.log" "creating database darwin and role $PIPELINE_ROLE failed"
        touch "$ready"
        # A new primary invalidates any standby copied from an older one.
        rm -f "$PG_DIR/replica.ready"
    fi
    say "$name: started on 127.0.0.1:$PRIMARY_PORT ($(since "$t0"))"
}

replica_runtime_conf() {
    pg_write_runtime_conf "$PG_DIR/replica" "$REPLICA_PORT" \
        "primary_conninfo = 'host=127.0.0.1 port=$PRIMARY_PORT user=postgres application_name=$SLOT'" \
        "primary_slot_name = '$SLOT'" \
        "hot_standby_feedback = ${DARWIN_NOTIFY_REPLICA_HOT_STANDBY_FEEDBACK:-off}" \
        "max_standby_streaming_delay = ${DARWIN_NOTIFY_REPLICA_MAX_STANDBY_STREAMING_DELAY:-30s}"
}

replica_wait_streaming() {
    local deadline status=""
    deadline=$((SECONDS + TIMEOUT))
    while :; do
        status=$(psql_admin "$REPLICA_PORT" postgres -c "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null || true)
        [[ $status == streaming ]] && return 0
        ((SECONDS < deadline)) ||
            fail_service replica "$REPLICA_PORT" "$LOG_DIR/replica.log" \
                "WAL receiver not streaming after ${TIMEOUT}s (status: ${status:-none})"
        sleep 0.2
    done
}

up_replica() {
    local name=replica data=$PG_DIR/replica ready=$PG_DIR/replica.ready t0 primary_id
    t0=$(now_ms)
    primary_id=$(pg_system_id "$PG_DIR/primary")
    if [[ -f $ready && $(<"$ready") == "$primary_id" ]]; then
        if pg_running_on "$name" "$REPLICA_PORT"; then
            # primary_conninfo follows the primary's port without a restart.
            if replica_runtime_conf; then
                as_pg "$PG_BIN/pg_ctl" -D "$data" reload >/dev/null
                say "$name: primary connection changed, reloaded"
            fi
            pg_wait_ready "$name" "$REPLICA_PORT"
            replica_wait_streaming
            say "$name: already running on 127.0.0.1:$REPLICA_PORT (streaming)"
            return 0
        fi
    else
        local log
        log=$(pg_log_file "$name")
        if [[ -d $data ]]; then
            if pg_running "$data"; then pg_stop "$name" || die "$name: could not stop"; fi
            rm -rf "$data"
        fi
        rm -f "$ready"
        psql_admin "$PRIMARY_PORT" postgres -c \
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$SLOT' AND NOT active" \
            >/dev/null
        pg_owned_dir "$data"
        as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$data" \
            -R -X stream -C -S "$SLOT" -c fast >>"$log" 2>&1 ||
            fail_service "$name" "$REPLICA_PORT" "$log" "pg_basebackup from 127.0.0.1:$PRIMARY_PORT failed"
        # Connection settings move to darwin_notify.conf, which follows the ports on every start.
        sed -i -e '/^primary_conninfo/d' -e '/^primary_slot_name/d' "$data/postgresql.auto.conf"
        standby_hba >"$data/pg_hba.conf"
        echo "$primary_id" >"$ready"
    fi
    replica_runtime_conf || true
    pg_start "$name" "$REPLICA_PORT"
    replica_wait_streaming
    say "$name: started on 127.0.0.1:$REPLICA_PORT, streaming from $PRIMARY_PORT ($(since "$t0"))"
}

up_store() {
    local name=store data=$PG_DIR/store ready=$PG_DIR/store.ready t0
    t0=$(now_ms)
    if [[ -f $ready ]] && pg_running_on "$name" "$STORE_PORT"; then
        pg_wait_ready "$name" "$STORE_PORT"
        say "$name: already running on 127.0.0.1:$STORE_PORT"
        return 0
    fi
    local fresh=0
    if [[ ! -f $ready ]]; then
        fresh=1
        pg_initdb "$name" <<EOF
max_connections = 200
EOF
    fi
    pg_write_runtime_conf "$data" "$STORE_PORT" || true
    pg_start "$name" "$STORE_PORT"
    if ((fresh)); then
        psql_admin "$STORE_PORT" postgres >>"$LOG_DIR/$name.log" 2>&1 <<EOF ||
CREATE ROLE $PIPELINE_ROLE LOGIN;
CREATE DATABASE notify_store OWNER $PIPELINE_ROLE;
CREATE DATABASE dagster OWNER $PIPELINE_ROLE;
EOF
            fail_service "$name" "$STORE_PORT" "$LOG_DIR/$name.log" "creating databases notify_store and dagster failed"
        touch "$ready"
    fi
    say "$name: started on 127.0.0.1:$STORE_PORT ($(since "$t0"))"
}

# ------------------------------------------------------------------------------------ Kafka

KAFKA_JVM=(
    java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.xml" -Ddarwin.kafka.log="$LOG_DIR/kafka.log"
    -cp "$KAFKA_CACHE/libs/*"
)
kafka_java() { "${KAFKA_JVM[@]}" "$@"; }

ensure_kafka_jars() {
    local stamp=$KAFKA_CACHE/libs/.complete want t0
    want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
    if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
        return 0
    fi
    command -v java >/dev/null || die "java not found (Kafka needs Java 17+)"
    command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka $KAFKA_VERSION)"
    t0=$(now_ms)
    say "kafka: fetching Kafka $KAFKA_VERSION jars with Maven into $KAFKA_CACHE/libs (log: $LOG_DIR/maven.log)"
    mkdir -p "$KAFKA_CACHE"
    rm -rf "$KAFKA_CACHE/libs.tmp"
    mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$KAFKA_CACHE/libs.tmp" >>"$LOG_DIR/maven.log" 2>&1 ||
        die "Maven could not fetch Kafka $KAFKA_VERSION; see $LOG_DIR/maven.log"
    rm -rf "$KAFKA_CACHE/libs"
    mv "$KAFKA_CACHE/libs.tmp" "$KAFKA_CACHE/libs"
    echo "$want" >"$stamp"
    say "kafka: fetched $(find "$KAFKA_CACHE/libs" -name '*.jar' | wc -l) jars ($(since "$t0"))"
}

kafka_config() {
    sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$KAFKA_DIR/data|g" \
        "$SCRIPT_DIR/kafka/server.properties.in"
}

kafka_render_config() {
    cp "$SCRIPT_DIR/kafka/log4j2.xml" "$KAFKA_DIR/log4j2.xml"
    kafka_config >"$KAFKA_DIR/server.properties"
}

# The standalone quorum records the controller's endpoint in the metadata log, so a
# different controller port needs freshly formatted storage.
kafka_format_if_needed() {
    local marker=$KAFKA_DIR/formatted-for cluster_id t0
    if [[ -f $KAFKA_DIR/data/meta.properties && -f $marker &&
        $(<"$marker") == "$KAFKA_CONTROLLER_PORT $KAFKA_VERSION" ]]; then
        return 0
    fi
    t0=$(now_ms)
    rm -rf "$KAFKA_DIR/data" "$marker"
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka.log") ||
        fail_service kafka "$KAFKA_PORT" "$LOG_DIR/kafka.log" "StorageTool random-uuid failed"
    kafka_java kafka.tools.StorageTool format --config "$KAFKA_DIR/server.properties" \
        --cluster-id "$cluster_id" --standalone >>"$LOG_DIR/kafka.log" 2>&1 ||
        fail_service kafka "$KAFKA_PORT" "$LOG_DIR/kafka.log" "StorageTool format failed"
    echo "$KAFKA_CONTROLLER_PORT $KAFKA_VERSION" >"$marker"
    say "kafka: formatted storage, cluster id $cluster_id ($(since "$t0"))"
}

kafka_pid() { running_pid "$KAFKA_PID_FILE" "kafka.Kafka"; }

# Launches the broker unless it is running (no wait); KAFKA_ALREADY tells which.
KAFKA_ALREADY=0
KAFKA_LAUNCHED_MS=0
kafka_launch() {
    KAFKA_ALREADY=0
    if kafka_pid >/dev/null; then
        if [[ $(kafka_config) == "$(cat "$KAFKA_DIR/server.properties" 2>/dev/null)" ]]; then
            KAFKA_ALREADY=1
            return 0
        fi
        say "kafka: settings changed (ports?), restarting"
        kafka_stop || die "kafka: could not stop"
    fi
    port_taken "$KAFKA_PORT" &&
        fail_service kafka "$KAFKA_PORT" "$LOG_DIR/kafka.log" "port is already in use by another process"
    port_taken "$KAFKA_CONTROLLER_PORT" &&
        fail_service kafka "$KAFKA_CONTROLLER_PORT" "$LOG_DIR/kafka.log" "controller port is already in use by another process"
    ensure_kafka_jars
    kafka_render_config
    kafka_format_if_needed
    KAFKA_LAUNCHED_MS=$(now_ms)
    launch "$KAFKA_PID_FILE" "$LOG_DIR/kafka.log" \
        "${KAFKA_JVM[@]}" kafka.Kafka "$KAFKA_DIR/server.properties" ||
        fail_service kafka "$KAFKA_PORT" "$LOG_DIR/kafka.log" "could not launch the broker"
}

kafka_wait_healthy() {
    local deadline pid err
    deadline=$((SECONDS + TIMEOUT))
    until port_open "$KAFKA_PORT"; do
        pid=$(kafka_pid) || fail_service kafka "$KAFKA_PORT" "$LOG_DIR/kafka.log" "broker process exited"
        ((SECONDS < deadline)) ||
            fail_service kafka "$KAFKA_PORT" "$LOG_DIR/kafka.log" "port not open after ${TIMEOUT}s"
        sleep 0.25
    done
    if [[ -x $PYTHON ]] && "$PYTHON" -c 'import kafka' 2>/dev/null; then
        err=$("$PYTHON" - "127.0.0.1:$KAFKA_PORT" "$((deadline - SECONDS))" 2>&1 <<'EOF'
import logging
import sys
import time

from kafka import KafkaAdminClient

logging.disable(logging.CRITICAL)
bootstrap, budget = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + max(budget, 1.0)
while True:
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="services-health", request_timeout_ms=5000
        )
        try:
            admin.list_topics()
        finally:
            admin.close()
        break
    except Exception as exc:  # noqa: BLE001
        if time.monotonic() > deadline:
            sys.exit(f"admin client could not list topics: {exc!r}")
        time.sleep(0.25)
EOF
        ) || fail_service kafka "$KAFKA_PORT" "$LOG_DIR/kafka.log" "$err"
    fi
}

kafka_stop() { stop_pid_file kafka "$KAFKA_PID_FILE" "kafka.Kafka" "${1:-TERM}"; }

kafka_start() {
    kafka_launch
    kafka_wait_healthy
    kafka_report
}

kafka_report() {
    if ((KAFKA_ALREADY)); then
        say "kafka: already running on 127.0.0.1:$KAFKA_PORT (pid $(kafka_pid))"
    else
        say "kafka: started $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (pid $(kafka_pid), healthy $(since "$KAFKA_LAUNCHED_MS") after the JVM started)"
    fi
}

# ------------------------------------------------------------------------------------ sinks

sink_port() {
    case $1 in
        sendgrid) echo "$SENDGRID_PORT" ;;
        mandrill) echo "$MANDRILL_PORT" ;;
        *) echo "$SMS_PORT" ;;
    esac
}
sink_pid() { running_pid "$SINK_DIR/$1.pid" "darwin_notify_assets.testing.sinks $1"; }

declare -A SINK_ALREADY=()
sink_launch() {
    local kind=$1 port
    port=$(sink_port "$kind")
    SINK_ALREADY[$kind]=0
    if sink_pid "$kind" >/dev/null; then
        if running_pid "$SINK_DIR/$kind.pid" "--port $port " >/dev/null; then
            SINK_ALREADY[$kind]=1
            return 0
        fi
        say "$kind sink: running on another port, restarting on $port"
        stop_pid_file "$kind sink" "$SINK_DIR/$kind.pid" "darwin_notify_assets.testing.sinks $kind" ||
            die "$kind sink: could not stop"
    fi
    port_taken "$port" &&
        fail_service "$kind sink" "$port" "$LOG_DIR/$kind.log" "port is already in use by another process"
    [[ -x $PYTHON ]] || die "$kind sink: Python $PYTHON not found (set DARWIN_NOTIFY_PYTHON)"
    (
        cd "$REPO_ROOT"
        export PYTHONPATH=$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}
        launch "$SINK_DIR/$kind.pid" "$LOG_DIR/$kind.log" \
            "$PYTHON" -m darwin_notify_assets.testing.sinks "$kind" --host 127.0.0.1 --port "$port" \
            --record "$SINK_DIR/$kind.jsonl"
    ) || fail_service "$kind sink" "$port" "$LOG_DIR/$kind.log" "could not launch"
}

sink_wait_healthy() {
    local kind=$1 port deadline
    port=$(sink_port "$kind")
    deadline=$((SECONDS + TIMEOUT))
    until http_ok "$port" /_health; do
        sink_pid "$kind" >/dev/null ||
            fail_service "$kind sink" "$port" "$LOG_DIR/$kind.log" "process exited"
        ((SECONDS < deadline)) ||
            fail_service "$kind sink" "$port" "$LOG_DIR/$kind.log" "GET /_health did not answer 200 after ${TIMEOUT}s"
        sleep 0.1
    done
}

# -------------------------------------------------------------------------------- commands

cmd_up() {
    local t_all kind
    t_all=$(now_ms)
    prepare_state_dir
    exec 9>"$DIR/.lock"
    flock 9
    ensure_packages
    ensure_odbc_driver
    find_pg_bin
    prepare_pg_dirs

    # The broker's JVM takes the longest to start, so it boots while PostgreSQL comes up.
    kafka_launch
    for kind in "${SINK_KINDS[@]}"; do
        sink_launch "$kind"
    done

    up_primary
    up_replica
    up_store

    for kind in "${SINK_KINDS[@]}"; do
        sink_wait_healthy "$kind"
        if ((SINK_ALREADY[$kind])); then
            say "$kind sink: already running on 127.0.0.1:$(sink_port "$kind")"
        else
            say "$kind sink: started on 127.0.0.1:$(sink_port "$kind") (pid $(sink_pid "$kind"))"
        fi
    done
    kafka_wait_healthy
    kafka_report
    say "all services up ($(since "$t_all")); state: $DIR"
}

cmd_down() {
    local t0 kind leftovers rc=0
    t0=$(now_ms)
    if [[ ! -d $DIR ]]; then
        say "nothing to stop ($DIR does not exist)"
        return 0
    fi
    exec 9>"$DIR/.lock"
    flock 9
    for kind in mandrill sms sendgrid; do
        stop_pid_file "$kind sink" "$SINK_DIR/$kind.pid" "darwin_notify_assets.testing.sinks $kind" || rc=1
    done
    kafka_stop || rc=1
    if [[ -d $PG_DIR ]]; then
        find_pg_bin
        pg_stop replica || rc=1
        pg_stop primary || rc=1
        pg_stop store || rc=1
    fi
    # Only reported: they may be someone's `tail -f` of a log rather than a service.
    leftovers=$(pgrep -f -- "$DIR/" | grep -vx "$$" || true)
    if [[ -n $leftovers ]]; then
        say "warning: processes still mention $DIR:"
        ps -o pid=,args= -p "$(echo "$leftovers" | paste -sd,)" | sed 's/^/    /' || true
    fi
    if ((rc)); then
        printf '[services] ERROR: some services did not stop cleanly\n' >&2
        return 1
    fi
    say "all services stopped ($(since "$t0"))"
}

cmd_status() {
    local ok=0 name port data pid extra kind
    find_pg_bin
    for name in primary replica store; do
        case $name in
            primary) port=$PRIMARY_PORT ;;
            replica) port=$REPLICA_PORT ;;
            store) port=$STORE_PORT ;;
        esac
        data=$PG_DIR/$name
        extra=""
        if pg_running "$data"; then
            pid=$(head -n 1 "$data/postmaster.pid")
            if [[ $name == replica ]]; then
                extra=$(psql_admin "$port" postgres -c "SELECT 'wal receiver ' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'absent') || ', replay lag ' || coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0) || ' bytes'" 2>/dev/null || echo "not answering")
            fi
            printf '%-14s running  127.0.0.1:%-6s pid %-8s %s\n' "$name" "$port" "$pid" "$extra"
        else
            printf '%-14s stopped  127.0.0.1:%s\n' "$name" "$port"
            ok=1
        fi
    done
    if pid=$(kafka_pid); then
        printf '%-14s running  127.0.0.1:%-6s pid %-8s Kafka %s\n' kafka "$KAFKA_PORT" "$pid" "$KAFKA_VERSION"
    else
        printf '%-14s stopped  127.0.0.1:%s\n' kafka "$KAFKA_PORT"
        ok=1
    fi
    for kind in "${SINK_KINDS[@]}"; do
        port=$(sink_port "$kind")
        if pid=$(sink_pid "$kind"); then
            printf '%-14s running  127.0.0.1:%-6s pid %-8s %s\n' "$kind sink" "$port" "$pid" "$SINK_DIR/$kind.jsonl"
        else
            printf '%-14s stopped  127.0.0.1:%s\n' "$kind sink" "$port"
            ok=1
        fi
    done
    return "$ok"
}

cmd_env() {
    local pairs=(
        DARWIN_NOTIFY_REPLICA_URL "postgresql://$PIPELINE_ROLE@127.0.0.1:$REPLICA_PORT/darwin"
        DARWIN_NOTIFY_STORE_URL "postgresql://$PIPELINE_ROLE@127.0.0.1:$STORE_PORT/notify_store"
        DARWIN_NOTIFY_PRIMARY_ADMIN_URL "postgresql://postgres@127.0.0.1:$PRIMARY_PORT/darwin"
        DARWIN_NOTIFY_REPLICA_ADMIN_URL "postgresql://postgres@127.0.0.1:$REPLICA_PORT/darwin"
        DARWIN_NOTIFY_KAFKA_BOOTSTRAP "127.0.0.1:$KAFKA_PORT"
        DARWIN_NOTIFY_SENDGRID_HOST "http://127.0.0.1:$SENDGRID_PORT"
        DARWIN_NOTIFY_SENDGRID_API_KEY "SG.local-sink-key"
        DARWIN_NOTIFY_SMS_BASE_URL "http://127.0.0.1:$SMS_PORT"
        DARWIN_NOTIFY_TWILIO_ACCOUNT_SID "AC00000000000000000000000000000000"
        DARWIN_NOTIFY_TWILIO_AUTH_TOKEN "local-sink-token"
        DARWIN_NOTIFY_SENDGRID_SINK_RECORD "$SINK_DIR/sendgrid.jsonl"
        DARWIN_NOTIFY_SMS_SINK_RECORD "$SINK_DIR/sms.jsonl"
        DARWIN_NOTIFY_MANDRILL_HOST "http://127.0.0.1:$MANDRILL_PORT/api/1.0"
        DARWIN_NOTIFY_MANDRILL_API_KEY "local-mandrill-key"
        DARWIN_NOTIFY_MANDRILL_SINK_RECORD "$SINK_DIR/mandrill.jsonl"
        DAGSTER_PG_HOST "127.0.0.1"
        DAGSTER_PG_PORT "$STORE_PORT"
        DAGSTER_PG_USER "$PIPELINE_ROLE"
        DAGSTER_PG_PASSWORD ""
        DAGSTER_PG_DB "dagster"
        DARWIN_NOTIFY_SERVICES_DIR "$DIR"
        DARWIN_NOTIFY_KAFKA_PID_FILE "$KAFKA_PID_FILE"
    )
    local i
    for ((i = 0; i < ${#pairs[@]}; i += 2)); do
        if [[ -z ${pairs[i + 1]} ]]; then
            printf 'export %s=\n' "${pairs[i]}"
        else
            printf 'export %s=%q\n' "${pairs[i]}" "${pairs[i + 1]}"
        fi
    done
}

usage() {
    cat >&2 <<EOF
usage: $0 up|down|status|env|kafka-stop [--kill]|kafka-start
  up           start every service (idempotent), wait until healthy
  down         stop every service (idempotent)
  status       show what is running; exit 1 unless everything is
  env          print export lines: eval "\$($0 env)"
  kafka-stop   stop the broker only (--kill: SIGKILL, no clean shutdown)
  kafka-start  start the broker only and wait until it serves requests
EOF
    exit 2
}

main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        env) cmd_env ;;
        kafka-stop)
            if [[ ${1:-} == --kill ]]; then kafka_stop KILL; else kafka_stop; fi
            ;;
        kafka-start)
            prepare_state_dir
            kafka_start
            ;;
        *) usage ;;
    esac
}

main "$@"
