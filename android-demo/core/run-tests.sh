#!/usr/bin/env bash
# Compile the app core and run its JUnit tests on this machine's JVM (no Gradle or Android SDK needed).
# Needs a JDK (17+) and JUnit 4: on Debian/Ubuntu, apt-get install default-jdk-headless junit4.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
junit="${JUNIT_JAR:-/usr/share/java/junit4.jar}"
hamcrest="${HAMCREST_JAR:-/usr/share/java/hamcrest-core.jar}"
if ! command -v javac >/dev/null || [ ! -f "$junit" ]; then
  echo "android-demo core tests need javac and JUnit 4 ($junit): apt-get install default-jdk-headless junit4" >&2
  exit 3
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
javac -Xlint:all -Werror -d "$out/main" $(find src/main/java -name '*.java')
javac -d "$out/test" -cp "$out/main:$junit" $(find src/test/java -name '*.java')
tests=$(cd src/test/java && find . -name '*Test.java' | sed 's#^\./##; s#\.java$##; s#/#.#g' | sort)
java -Dqwenedge.root="$root" -cp "$out/main:$out/test:$junit:$hamcrest" org.junit.runner.JUnitCore $tests
