package dev.qwenedge.demo

import dev.qwenedge.core.LanguageModel
import dev.qwenedge.core.Manifest
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File

/**
 * A bundle's model.pte behind the core's LanguageModel: forward(tokens [1, T], input_pos [1]) -> logits of the
 * last position, the KV cache inside the program. A static single-token program (--delegate coreml, which an
 * Android phone cannot run anyway, or any bundle whose manifest declares tokens [1, 1]) is fed one token per call.
 */
class ExecuTorchModel(bundle: File, private val manifest: Manifest) : LanguageModel {
    private val module: Module = Module.load(File(bundle, manifest.entryFiles[0]).absolutePath)
    private val singleToken: Boolean = manifest.singleTokenEntry
    private var position = 0

    private fun forward(tokens: IntArray): FloatArray {
        check(position + tokens.size <= manifest.maxSeqLen) {
            "${position + tokens.size} positions exceed the bundle's context of ${manifest.maxSeqLen}"
        }
        val ids = Tensor.fromBlob(LongArray(tokens.size) { tokens[it].toLong() }, longArrayOf(1, tokens.size.toLong()))
        val pos = Tensor.fromBlob(longArrayOf(position.toLong()), longArrayOf(1))
        val out = module.forward(EValue.from(ids), EValue.from(pos))[0].toTensor().dataAsFloatArray
        position += tokens.size
        return out.copyOfRange(out.size - manifest.vocabSize, out.size)
    }

    override fun prefill(tokenIds: IntArray): FloatArray {
        if (!singleToken) return forward(tokenIds)
        var logits = FloatArray(0)
        for (id in tokenIds) logits = forward(intArrayOf(id))
        return logits
    }

    override fun decode(tokenId: Int): FloatArray = forward(intArrayOf(tokenId))

    override fun reset() {
        position = 0 // entries past the position are never attended (causal from the start position)
    }

    override fun position(): Int = position

    override fun maxSeqLen(): Int = manifest.maxSeqLen

    fun close() = module.destroy()
}
