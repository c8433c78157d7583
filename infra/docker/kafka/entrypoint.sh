#!/bin/sh
# One KRaft node (broker+controller). Environment: KAFKA_PORT (client listener, all interfaces),
# KAFKA_ADVERTISED (host:port clients are told to use; default localhost:KAFKA_PORT), KAFKA_CONTROLLER_PORT,
# KAFKA_HEAP_MB, KAFKA_DATA, KAFKA_MAX_RECORD_BYTES (default 8 MiB, Eddy's MAX_RECORD_BYTES), and
# KAFKA_SASL_USERS ("user:password ..."): the client listener then takes SASL_PLAINTEXT with PLAIN for
# those users (the inter-broker listener stays on the container's loopback, unpublished).
set -eu
: "${KAFKA_ADVERTISED:=localhost:${KAFKA_PORT}}"
: "${KAFKA_MAX_RECORD_BYTES:=8388608}"
: "${KAFKA_SASL_USERS:=}"
client=PLAINTEXT
sasl_lines=
if [ -n "$KAFKA_SASL_USERS" ]; then
  client=SASL_PLAINTEXT
  users=
  for pair in $KAFKA_SASL_USERS; do
    users="$users user_${pair%%:*}=\"${pair#*:}\""
  done
  sasl_lines="sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required${users};"
fi
conf=/var/lib/kafka/server.properties
mkdir -p "$KAFKA_DATA"
cat > "$conf" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${KAFKA_CONTROLLER_PORT}
listeners=${client}://0.0.0.0:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT},INTERNAL://127.0.0.1:9094
advertised.listeners=${client}://${KAFKA_ADVERTISED},INTERNAL://127.0.0.1:9094
controller.listener.names=CONTROLLER
listener.security.protocol.map=${client}:${client},CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT
inter.broker.listener.name=INTERNAL
${sasl_lines}
log.dirs=${KAFKA_DATA}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.enable=true
message.max.bytes=${KAFKA_MAX_RECORD_BYTES}
replica.fetch.max.bytes=${KAFKA_MAX_RECORD_BYTES}
PROPS
log4j=/var/lib/kafka/log4j.properties
printf '%s\n' 'log4j.rootLogger=INFO, stdout' 'log4j.appender.stdout=org.apache.log4j.ConsoleAppender' \
  'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout' \
  'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n' > "$log4j"
libs='/opt/kafka/libs/*'  # a classpath wildcard for java, never a shell glob (quoted below)
if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
  # A KRaft cluster id: 16 random bytes, unpadded base64url, never starting with '-' (see infra/kafka.py).
  id=-
  while [ "${id#-}" != "$id" ]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  java "-Dlog4j.configuration=file:${log4j}" -cp "$libs" kafka.tools.StorageTool format -t "$id" -c "$conf"
fi
exec java "-Xmx${KAFKA_HEAP_MB}m" "-Xms$((KAFKA_HEAP_MB < 256 ? KAFKA_HEAP_MB : 256))m" -XX:+UseG1GC \
  "-Dlog4j.configuration=file:${log4j}" -cp "$libs" kafka.Kafka "$conf"
