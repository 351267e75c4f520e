package dev.qwenedge.demo

import dev.qwenedge.core.LanguageModel
import dev.qwenedge.core.Manifest
import org.pytorch.executorch.EValue
import org.pytorch.executorch.ExecutorchRuntimeException
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
        val out = run(ids, pos)
        position += tokens.size
        return out.copyOfRange(out.size - manifest.vocabSize, out.size)
    }

    /**
     * ExecuTorch looks a program's operators up when it loads the method, which forward does on its first call: that is
     * where an int8-cache bundle (qwen_edge::kv8_* kernels) fails on the stock AAR from Maven, with "Operator missing".
     * The message then says which build has them; send(), which called it, shows the message.
     */
    private fun run(ids: Tensor, pos: Tensor): FloatArray = try {
        module.forward(EValue.from(ids), EValue.from(pos))[0].toTensor().dataAsFloatArray
    } catch (e: ExecutorchRuntimeException) {
        if (manifest.kvCacheDtype != "int8" || e.errorCode != ExecutorchRuntimeException.OPERATOR_MISSING) throw e
        throw IllegalStateException("${e.message}: this bundle's int8 KV cache runs on qwen-edge's own kernels, which " +
            "this app's ExecuTorch lacks; build the app with the AAR from android-demo/executorch/build_aar.sh, or " +
            "export the bundle with --kv-cache float32", e)
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
