// The app's non-UI core: plain Java, no Android dependency, unit-tested on any JVM
// (here: ./run-tests.sh, which CI runs; in Android Studio: ./gradlew :core:test). Its resource
// src/main/resources/dev/qwenedge/core/manifest.schema.json is a copy of runtimes/manifest.schema.json.
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

dependencies {
    // JSON (strict mode, JsonReader): 2.10.1 has the API of Debian's libgoogle-gson-java 2.10, which
    // run-tests.sh (and so CI) compiles and tests the core against
    implementation("com.google.code.gson:gson:2.10.1")
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    systemProperty("qwenedge.root", rootProject.projectDir.parentFile.absolutePath)
}
