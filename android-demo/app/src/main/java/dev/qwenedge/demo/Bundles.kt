package dev.qwenedge.demo

import android.content.Context
import dev.qwenedge.core.BundleVerifier
import dev.qwenedge.core.Manifest
import java.io.File

/** A bundle found on the device, already verified (manifest, format version, hashes, paths). */
data class BundleEntry(val dir: File, val manifest: Manifest?, val problems: List<String>) {
    val name: String get() = dir.name
    val usable: Boolean get() = manifest != null && problems.isEmpty() && manifest.backend == "executorch"
}

/**
 * Bundles live in the app's external files dir, where `python -m exporter deploy --android` pushes them:
 * /sdcard/Android/data/dev.qwenedge.demo/files/bundles/NAME/ (no storage permission needed).
 */
object Bundles {
    fun root(context: Context): File = File(context.getExternalFilesDir(null), "bundles").apply { mkdirs() }

    fun list(context: Context): List<BundleEntry> =
        root(context).listFiles { f -> f.isDirectory }.orEmpty().sortedBy { it.name }.map { dir ->
            val report = BundleVerifier.verify(dir.toPath())
            val problems = report.problems.map { it.message }.toMutableList()
            val manifest = report.manifest
            if (manifest != null && manifest.backend != "executorch") {
                problems += "backend ${manifest.backend}: this app runs ExecuTorch bundles (--target executorch)"
            }
            if (manifest != null && !manifest.qwen3Template) {
                problems += "its chat template is not Qwen3's, and this app renders Qwen3's only"
            }
            BundleEntry(dir, manifest, problems)
        }
}
