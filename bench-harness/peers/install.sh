#!/usr/bin/env bash
# Installs the peer brokers shardline-bench compares with (not part of the test suite):
#   - NATS server (JetStream) and Redis from Debian's packages (apt-get);
#   - Apache Kafka (KRaft) as jars from Maven Central, resolved with `mvn
#     dependency:copy-dependencies` from a generated pom into
#     ~/.cache/shardline-bench/kafka-<version>/libs/.
# The bench harness starts and stops every peer itself, on loopback, in temp dirs; this
# script only installs. Usage: bench-harness/peers/install.sh [nats] [redis] [kafka]
# (default: all three). KAFKA_VERSION overrides the Kafka version (default below; the
# harness's --kafka-version must match).
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
SCALA_VERSION="2.13"
CACHE_DIR="${SHARDLINE_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardline-bench}"

want=("$@")
if [ ${#want[@]} -eq 0 ]; then want=(nats redis kafka); fi

apt_packages=()
for peer in "${want[@]}"; do
  case "$peer" in
    nats) command -v nats-server >/dev/null || apt_packages+=(nats-server) ;;
    redis) command -v redis-server >/dev/null || apt_packages+=(redis-server) ;;
    kafka) command -v java >/dev/null || apt_packages+=(openjdk-17-jre-headless)
           command -v mvn >/dev/null || apt_packages+=(maven) ;;
    *) echo "install.sh: unknown peer '$peer' (nats, redis, kafka)" >&2; exit 2 ;;
  esac
done
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${apt_packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}"
fi

for peer in "${want[@]}"; do
  if [ "$peer" != kafka ]; then continue; fi
  dir="$CACHE_DIR/kafka-$KAFKA_VERSION"
  if [ -f "$dir/libs/.complete" ]; then
    echo "install.sh: Kafka $KAFKA_VERSION already in $dir/libs"
    continue
  fi
  mkdir -p "$dir"
  cat > "$dir/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>shardline.bench</groupId>
  <artifactId>kafka-peer</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-storage</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- Kafka logs through SLF4J 1.7: log4j's binding for it, so that the broker's errors
         reach its log (log4j 2 without a configuration file logs ERROR to the console). -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
POM
  echo "install.sh: resolving Kafka $KAFKA_VERSION and its dependencies from Maven Central into $dir/libs"
  rm -rf "$dir/libs"
  mvn -q -B -f "$dir/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dir/libs"
  touch "$dir/libs/.complete"
  echo "install.sh: Kafka $KAFKA_VERSION: $(ls "$dir/libs" | wc -l) jars in $dir/libs"
done
echo "install.sh: done (nats-server: $(command -v nats-server || echo -), redis-server: $(command -v redis-server || echo -))"
