package dev.qwenedge.demo

import android.app.Application
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateListOf
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.setValue
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import dev.qwenedge.core.ChatTemplate
import dev.qwenedge.core.FixtureCheck
import dev.qwenedge.core.Generator
import dev.qwenedge.core.Json
import dev.qwenedge.core.Message
import dev.qwenedge.core.Sampler
import dev.qwenedge.core.ToolCalls
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import java.io.File

/** One exchange as the UI shows it: the reasoning apart from the answer, tool calls, and live speed. */
class Turn(val question: String) {
    var reasoning by mutableStateOf("")
    var answer by mutableStateOf("")
    var written = "" // the answer as the model wrote it, tool-call blocks included: what the next prompt holds
    var toolCalls by mutableStateOf<List<String>>(emptyList()) // "name {arguments}", and malformed blocks
    var stats by mutableStateOf("")
    var cutByBudget by mutableStateOf(false)
}

class ChatViewModel(app: Application) : AndroidViewModel(app) {
    val bundles = mutableStateListOf<BundleEntry>()
    var selected by mutableStateOf<BundleEntry?>(null)
    var thinking by mutableStateOf(true)
    var budget by mutableStateOf<Int?>(128) // null: unlimited
    var greedy by mutableStateOf(false) // sampling with the bundle's per-mode defaults unless asked for greedy
    var busy by mutableStateOf(false)
    var error by mutableStateOf<String?>(null)
    val turns = mutableStateListOf<Turn>()
    private var model: ExecuTorchModel? = null
    private var tokenizer: BundleTokenizer? = null
    private var generationConfig: Map<String, Any> = emptyMap()
    private val sampler = BatterySampler(app)
    var lastEnergyFile by mutableStateOf<String?>(null)
    var bundleCheck by mutableStateOf<String?>(null) // the last "Check bundle" result, one line
    private var lastTokens = 0

    fun refresh() {
        bundles.clear()
        bundles.addAll(Bundles.list(getApplication()))
    }

    fun select(entry: BundleEntry) {
        if (!entry.usable) {
            error = entry.problems.joinToString("\n")
            return
        }
        viewModelScope.launch(Dispatchers.Default) {
            model?.close()
            tokenizer?.close()
            model = ExecuTorchModel(entry.dir, entry.manifest!!)
            tokenizer = BundleTokenizer(entry.dir)
            // the checkpoint's sampling defaults (its sha256 verified with the bundle)
            val config = File(entry.dir, "generation_config.json")
            generationConfig = if (config.isFile) Json.`object`(Json.parse(config.readBytes()), "generation_config")
                               else emptyMap()
            withContext(Dispatchers.Main) {
                selected = entry
                turns.clear()
                error = null
            }
        }
    }

    fun send(question: String) {
        val entry = selected ?: return
        val model = model ?: return
        val tokenizer = tokenizer ?: return
        val manifest = entry.manifest!!
        val history = turns.flatMap { listOf(Message("user", it.question), Message("assistant", it.written)) }
        val conversation = history + Message("user", question)
        val turn = Turn(question)
        turns.add(turn)
        busy = true
        sampler.start(viewModelScope)
        viewModelScope.launch(Dispatchers.Default) {
            val thinks = ChatTemplate.thinks(conversation, budget, thinking)
            // user text stays text: a <|im_start|> typed on the keyboard is not a control token
            val rendered = ChatTemplate.render(ChatTemplate.userTextAsText(conversation, tokenizer.specialTokens),
                true, thinks)
            val prompt = tokenizer.encodePrompt(rendered)
            val channels = mapOf("reasoning" to mutableListOf<Int>(), "content" to mutableListOf<Int>())
            val started = System.nanoTime()
            var first = 0L
            val generator = Generator(manifest.special, manifest.stopThinkingIds, manifest.vocabSize)
            val result = try {
                // Qwen advises against greedy decoding in thinking mode (endless repetition): sample by the mode in
                // effect (Params throws on a generation_config.json value out of range)
                val sampling = if (greedy) Sampler.greedy()
                               else Sampler(Sampler.Params.forMode(generationConfig, thinks))
                generator.run(model, prompt, thinks, budget, 512, sampling) { channel, id, _ ->
                    if (first == 0L) first = System.nanoTime()
                    val ids = channels.getValue(channel).apply { add(id) }
                    val text = tokenizer.decode(ids)
                    val steps = channels.values.sumOf { it.size } - 1
                    val seconds = (System.nanoTime() - first) / 1e9
                    val speed = if (steps > 0 && seconds > 0) "%.1f tok/s".format(steps / seconds) else ""
                    val ttft = "TTFT %.0f ms".format((first - started) / 1e6)
                    viewModelScope.launch(Dispatchers.Main) {
                        if (channel == "reasoning") turn.reasoning = text.trim('\n') else turn.answer = text.trim()
                        turn.stats = "$ttft  $speed"
                    }
                }
            } catch (e: Exception) {
                withContext(Dispatchers.Main) { error = e.message }
                null
            }
            sampler.stop()
            withContext(Dispatchers.Main) {
                busy = false
                if (result != null) {
                    val written = tokenizer.decode(channels.getValue("content")).trim()
                    val parsed = ToolCalls.parse(written, turn.reasoning)
                    turn.written = written
                    turn.answer = parsed.content
                    turn.toolCalls = parsed.calls.map { "${it.name} ${it.argumentsJson()}" } +
                        parsed.errors.map { "malformed tool call (${it.kind})" }
                    lastTokens = result.tokenIds.size
                    turn.cutByBudget = result.stoppedByBudget
                    turn.stats = "TTFT %.0f ms  prefill %.0f tok/s  decode %.1f tok/s  (%s)".format(
                        result.ttftMs, result.prefillTokensPerS, result.decodeTokensPerS, result.finishReason)
                }
            }
        }
    }

    /** Replays the bundle's reference fixture through this phone's model (the core's FixtureCheck): the numbers
     *  of the kernels that run here against what the bundle's reference computed at export. */
    fun checkBundle() {
        val entry = selected ?: return
        val model = model ?: return
        val manifest = entry.manifest!!
        val file = manifest.fixtureFile
        if (file == null) {
            bundleCheck = "this bundle has no reference fixture (exported before bundles carried one)"
            return
        }
        busy = true
        viewModelScope.launch(Dispatchers.Default) {
            val line = try {
                FixtureCheck.run(manifest, File(entry.dir, file).readBytes(), model).summary()
            } catch (e: Exception) {
                "reference fixture could not run: ${e.message}"
            }
            withContext(Dispatchers.Main) {
                busy = false
                bundleCheck = line
            }
        }
    }

    fun exportEnergy() {
        val entry = selected ?: return
        if (sampler.record.size() < 2 || lastTokens == 0) {
            error = "no energy samples yet: generate something first (on battery, not USB power)"
            return
        }
        lastEnergyFile = sampler.export(entry.name, lastTokens).absolutePath
    }

    override fun onCleared() {
        model?.close()
        tokenizer?.close()
    }
}
