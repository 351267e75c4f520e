#!/usr/bin/env bash
# Compile the app core and run its JUnit tests on this machine's JVM (no Gradle or Android SDK needed).
# Needs a JDK (17+), JUnit 4 and Gson: on Debian/Ubuntu, apt-get install default-jdk-headless junit4
# libgoogle-gson-java (Gradle builds take Gson from Maven instead: core/build.gradle.kts).
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
junit="${JUNIT_JAR:-/usr/share/java/junit4.jar}"
hamcrest="${HAMCREST_JAR:-/usr/share/java/hamcrest-core.jar}"
gson="${GSON_JAR:-/usr/share/java/gson.jar}"
if ! command -v javac >/dev/null || [ ! -f "$junit" ] || [ ! -f "$gson" ]; then
  echo "android-demo core tests need javac, JUnit 4 ($junit) and Gson ($gson):" \
       "apt-get install default-jdk-headless junit4 libgoogle-gson-java" >&2
  exit 3
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
javac -Xlint:all -Werror -d "$out/main" -cp "$gson" $(find src/main/java -name '*.java')
cp -R src/main/resources/. "$out/main/"
javac -d "$out/test" -cp "$out/main:$gson:$junit" $(find src/test/java -name '*.java')
tests=$(cd src/test/java && find . -name '*Test.java' | sed 's#^\./##; s#\.java$##; s#/#.#g' | sort)
java -Dqwenedge.root="$root" -cp "$out/main:$out/test:$gson:$junit:$hamcrest" org.junit.runner.JUnitCore $tests
