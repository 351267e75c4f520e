// The app's non-UI core: plain Java, no Android dependency, unit-tested on any JVM
// (here: ./run-tests.sh, which CI runs; in Android Studio: ./gradlew :core:test).
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    systemProperty("qwenedge.root", rootProject.projectDir.parentFile.absolutePath)
}
