package dev.qwenedge.demo

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer
import dev.qwenedge.core.ChatTemplate
import dev.qwenedge.core.Json
import java.io.File

/** The bundle's tokenizer.json through Hugging Face's tokenizers (DJL bindings): no hand-written BPE. */
class BundleTokenizer(bundle: File) : AutoCloseable {
    private val file = File(bundle, "tokenizer.json")
    private val tokenizer = HuggingFaceTokenizer.builder()
        .optTokenizerPath(file.toPath())
        .optAddSpecialTokens(false)
        .build()

    /** Every added token's text (<|im_start|>, <think>, <tool_call>, ...): what user text must not spell. */
    val specialTokens: List<String> = Json.array(Json.`object`(Json.parse(file.readBytes()), "tokenizer.json")
        ["added_tokens"], "added_tokens").map { Json.`object`(it, "added token")["content"] as String }

    fun encode(text: String): IntArray = tokenizer.encode(text, false, false).ids.map { it.toInt() }.toIntArray()

    /**
     * A rendered prompt whose user and tool text went through ChatTemplate.userTextAsText: encoded chunk by chunk,
     * so only the template's own control tokens become special ids.
     */
    fun encodePrompt(rendered: String): IntArray =
        ChatTemplate.encodingChunks(rendered, specialTokens).flatMap { encode(it).asList() }.toIntArray()

    fun decode(ids: List<Int>): String = tokenizer.decode(ids.map { it.toLong() }.toLongArray(), false)

    override fun close() = tokenizer.close()
}
