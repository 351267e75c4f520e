plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

android {
    namespace = "dev.qwenedge.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.qwenedge.demo"
        minSdk = 28
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk { abiFilters += listOf("arm64-v8a") }
    }
    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
    buildFeatures { compose = true }
    packaging { jniLibs { useLegacyPackaging = true } }
}

dependencies {
    implementation(project(":core"))
    // ExecuTorch's Android runtime (XNNPACK and the LLM custom ops our .pte bundles call), the same release as
    // the exporter (pyproject.toml pins executorch 1.5.1): ExecuTorch promises only that older programs run on
    // newer runtimes, so the runtime must not be older than the exporter. Maven's AAR lacks qwen-edge's own
    // kernels, which --kv-cache int8 bundles run on; android-demo/executorch/build_aar.sh builds the same release
    // with them into app/libs/executorch.aar, used instead when it is there. A local AAR brings no POM, so its
    // dependencies are declared here at the versions ExecuTorch's executorch_android/build.gradle gives its POM
    // (fbjni must be the one its JNI library was linked against); Maven's artifact brings them itself.
    val ownExecuTorch = file("libs/executorch.aar")
    if (ownExecuTorch.isFile) {
        implementation(files(ownExecuTorch))
        implementation("com.facebook.fbjni:fbjni:0.7.0")
        implementation("com.facebook.soloader:nativeloader:0.10.5")
    } else {
        implementation("org.pytorch:executorch-android:1.5.1")
    }
    // Hugging Face tokenizers (tokenizer.json) through DJL's maintained bindings, with their Android natives
    implementation("ai.djl.huggingface:tokenizers:0.31.1")
    implementation("ai.djl.android:tokenizer-native:0.31.1")
    implementation(platform("androidx.compose:compose-bom:2024.12.01"))
    implementation("androidx.activity:activity-compose:1.9.3")
    implementation("androidx.compose.material3:material3")
    implementation("androidx.compose.ui:ui")
    implementation("androidx.lifecycle:lifecycle-viewmodel-compose:2.8.7")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
}
