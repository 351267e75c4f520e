package dev.qwenedge.demo

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer
import java.io.File

/** The bundle's tokenizer.json through Hugging Face's tokenizers (DJL bindings): no hand-written BPE. */
class BundleTokenizer(bundle: File) : AutoCloseable {
    private val tokenizer = HuggingFaceTokenizer.builder()
        .optTokenizerPath(File(bundle, "tokenizer.json").toPath())
        .optAddSpecialTokens(false)
        .build()

    fun encode(text: String): IntArray = tokenizer.encode(text, false, false).ids.map { it.toInt() }.toIntArray()

    fun decode(ids: List<Int>): String = tokenizer.decode(ids.map { it.toLong() }.toLongArray(), false)

    override fun close() = tokenizer.close()
}
