import CoreML
import Foundation
import QwenEdgeCore

/// One exchange as the UI shows it: the reasoning apart from the answer, tool calls, and live speed.
struct Turn: Identifiable, Sendable {
    let id = UUID()
    var question: String
    var reasoning = ""
    var answer = ""
    var written = ""  // the answer as the model wrote it, tool-call blocks included: what the next prompt holds
    var toolCalls: [String] = []  // "name {arguments}", and malformed blocks
    var stats = ""
    var cutByBudget = false
}

/// A bundle found in the app, already verified: its manifest when it parsed, and every problem (empty: usable).
struct BundleEntry: Identifiable, Sendable {
    let name: String
    let url: URL
    let manifest: BundleManifest?
    let problems: [String]
    var id: String { name }
}

@MainActor
final class ChatModel: ObservableObject {
    @Published var bundles: [BundleEntry] = []
    @Published var selected: String?
    @Published var thinking = true
    @Published var budget: Int? = 128
    @Published var greedy = false  // sampling with the bundle's per-mode defaults unless asked for greedy
    @Published var computeUnits: MLComputeUnits = .cpuAndNeuralEngine
    @Published var turns: [Turn] = []
    @Published var busy = false
    @Published var error: String?
    /// The last "Check bundle" result, one line.
    @Published var bundleCheck: String?
    private var model: CoreMLRunner<CoreMLModel>?
    private var tokenizer: BundleTokenizer?
    private var manifest: BundleManifest?
    private var generationConfig = JSONObject()
    private var bundleURL: URL?

    /// Bundles copied into the app by `python -m exporter deploy --bundle DIR --ios ios-demo` (App/Bundles/NAME),
    /// a resource folder of this target, so in its resource bundle (Bundle.module), not the main bundle.
    func scan() {
        guard let root = Bundle.module.url(forResource: "Bundles", withExtension: nil),
              let names = try? FileManager.default.contentsOfDirectory(atPath: root.path) else { return }
        bundles = names.sorted().filter { !$0.hasPrefix(".") }.map { name in
            let url = root.appendingPathComponent(name)
            let report = BundleVerifier.verify(url)
            var problems = report.problems.map(\.message)
            if let m = report.manifest, m.backend != "coreml" {
                problems.append("backend \(m.backend): this app runs Core ML bundles (--target coreml)")
            }
            if let m = report.manifest, !m.qwen3Template {
                problems.append("its chat template is not Qwen3's, and this app renders Qwen3's only")
            }
            return BundleEntry(name: name, url: url, manifest: report.manifest, problems: problems)
        }
    }

    func select(_ name: String) async {
        guard let entry = bundles.first(where: { $0.name == name }), let manifest = entry.manifest,
              entry.problems.isEmpty else {
            error = bundles.first(where: { $0.name == name })?.problems.joined(separator: "\n")
            return
        }
        do {
            let plan = try CoreMLPlan(manifest)
            model = CoreMLRunner(plan: plan, functions: try CoreMLModel(bundle: entry.url, plan: plan,
                                                                        computeUnits: computeUnits))
            tokenizer = try BundleTokenizer(bundle: entry.url)
            // the checkpoint's sampling defaults (its sha256 verified with the bundle)
            let config = entry.url.appendingPathComponent("generation_config.json")
            if FileManager.default.fileExists(atPath: config.path) {
                generationConfig = try JSON.parse(Data(contentsOf: config)).objectValue ?? JSONObject()
            } else {
                generationConfig = JSONObject()
            }
            self.manifest = manifest
            bundleURL = entry.url
            selected = name
            turns = []
            error = nil
        } catch {
            self.error = "\(error)"
        }
    }

    func send(_ question: String) {
        guard let model, let tokenizer, let manifest, !busy else { return }
        var conversation: [Message] = turns.flatMap {
            [Message(role: "user", content: $0.question), Message(role: "assistant", content: $0.written)]
        }
        conversation.append(Message(role: "user", content: question))
        turns.append(Turn(question: question))
        let index = turns.count - 1
        busy = true
        let thinks = ChatTemplate.thinks(conversation, budget: budget, enableThinking: thinking)
        let budget = self.budget
        // Qwen advises against greedy decoding in thinking mode (endless repetition): sample by the mode in effect
        let sampling = greedy ? SamplingParams.greedy : SamplingParams.forMode(generationConfig, thinking: thinks)
        guard sampling.isValid else {
            error = "generation_config.json holds sampling values out of range: \(sampling)"
            busy = false
            return
        }
        // Off the main actor; `busy` keeps a second generation from starting while this one uses the model.
        Task.detached(priority: .userInitiated) {
            do {
                // user text stays text: a <|im_start|> typed on the keyboard is not a control token
                let text = try ChatTemplate.render(
                    ChatTemplate.userTextAsText(conversation, specialTokens: tokenizer.specialTokens),
                    enableThinking: thinks)
                let prompt = tokenizer.encodePrompt(text)
                var channels: [String: [Int]] = ["reasoning": [], "content": []]
                let generator = Generator(special: manifest.special, stopThinkingIds: manifest.stopThinkingIds,
                                          vocabSize: manifest.vocabSize)
                var sampler = Sampler(sampling)
                let started = Date()
                var first: Date?
                let result = try generator.run(model, prompt: prompt, thinking: thinks, budget: budget,
                                               maxNewTokens: 512, sampler: &sampler) { channel, id, _ in
                    let now = Date()
                    if first == nil { first = now }
                    channels[channel, default: []].append(id)
                    let decoded = tokenizer.decode(channels[channel] ?? [])
                    let steps = channels.values.map(\.count).reduce(0, +) - 1
                    let seconds = now.timeIntervalSince(first ?? now)
                    let stats = String(format: "TTFT %.0f ms  %.1f tok/s",
                                       (first ?? now).timeIntervalSince(started) * 1000,
                                       seconds > 0 ? Double(steps) / seconds : 0)
                    Task { @MainActor in
                        if channel == "reasoning" {
                            self.turns[index].reasoning = decoded.trimmingCharacters(in: .newlines)
                        } else {
                            self.turns[index].answer = decoded.trimmingCharacters(in: .whitespacesAndNewlines)
                        }
                        self.turns[index].stats = stats
                    }
                }
                let written = tokenizer.decode(channels["content"] ?? []).trimmingCharacters(in: .whitespacesAndNewlines)
                let reasoning = tokenizer.decode(channels["reasoning"] ?? []).trimmingCharacters(in: .newlines)
                let parsed = ToolCallParser.parse(answer: written, reasoning: reasoning)
                await MainActor.run {
                    self.turns[index].written = written
                    self.turns[index].answer = parsed.content
                    self.turns[index].toolCalls = parsed.toolCalls.map {
                        "\($0.name) \($0.argumentsJSON)"
                    } + parsed.errors.map { "malformed tool call (\($0.kind))" }
                    self.turns[index].cutByBudget = result.stoppedByBudget
                    self.turns[index].stats = String(format: "TTFT %.0f ms  prefill %.0f tok/s  decode %.1f tok/s (%@)",
                                                     result.ttftMs, result.prefillTokensPerS, result.decodeTokensPerS,
                                                     result.finishReason)
                    self.busy = false
                }
            } catch {
                let message = "\(error)"
                await MainActor.run {
                    self.error = message
                    self.busy = false
                }
            }
        }
    }

    /// Replays the bundle's reference fixture through this device's Core ML model (the core's FixtureCheck): the
    /// numbers of the compute units that run here against what the bundle's reference computed at export.
    func checkBundle() {
        guard let model, let manifest, let bundleURL, !busy else { return }
        guard let file = manifest.fixtureFile else {
            bundleCheck = "this bundle has no reference fixture (exported before bundles carried one)"
            return
        }
        busy = true
        Task.detached(priority: .userInitiated) {
            let line: String
            do {
                let data = try Data(contentsOf: bundleURL.appendingPathComponent(file))
                line = try FixtureCheck.run(manifest: manifest, fixture: data, model: model).summary
            } catch {
                line = "reference fixture could not run: \(error)"
            }
            await MainActor.run {
                self.bundleCheck = line
                self.busy = false
            }
        }
    }
}
