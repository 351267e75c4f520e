import CoreML
import QwenEdgeCore
import SwiftUI

@main
struct QwenEdgeApp: App {
    @StateObject private var chat = ChatModel()

    var body: some Scene {
        WindowGroup { ChatView().environmentObject(chat) }
    }
}

/// Budget slider stops: 0 (no thinking) … 512 tokens, and the last stop means unlimited.
private let budgets: [Int?] = [0, 16, 32, 64, 128, 256, 512, nil]

struct ChatView: View {
    @EnvironmentObject var chat: ChatModel
    @State private var input = "What is 4821 - 9377?"

    var body: some View {
        NavigationStack {
            VStack(spacing: 8) {
                if chat.selected == nil {
                    Picker("Compute units", selection: $chat.computeUnits) {
                        Text("CPU + Neural Engine").tag(MLComputeUnits.cpuAndNeuralEngine)
                        Text("CPU + GPU").tag(MLComputeUnits.cpuAndGPU)
                        Text("All").tag(MLComputeUnits.all)
                    }
                    List(chat.bundles) { bundle in
                        Button {
                            Task { await chat.select(bundle.name) }
                        } label: {
                            VStack(alignment: .leading) {
                                Text(bundle.name)
                                Text(bundle.problems.isEmpty ? "\(bundle.manifest?.quant ?? ""), context \(bundle.manifest?.maxSeqLen ?? 0)"
                                                             : bundle.problems.joined(separator: "; "))
                                    .font(.caption)
                            }
                        }
                    }
                } else {
                    Toggle("Think", isOn: $chat.thinking)
                    Toggle("Greedy", isOn: $chat.greedy)
                    HStack {
                        Text("Budget: \(chat.budget.map(String.init) ?? "unlimited")")
                        Slider(value: Binding(
                            get: { Double(budgets.firstIndex(where: { $0 == chat.budget }) ?? 4) },
                            set: { chat.budget = budgets[Int($0.rounded())] }),
                               in: 0...Double(budgets.count - 1), step: 1)
                            .disabled(!chat.thinking)
                    }
                    ScrollView {
                        ForEach(chat.turns) { turn in TurnView(turn: turn) }
                    }
                    HStack {
                        TextField("Ask", text: $input).textFieldStyle(.roundedBorder)
                        Button("Send") { chat.send(input) }.disabled(chat.busy)
                        Button("Check bundle") { chat.checkBundle() }.disabled(chat.busy)
                    }
                    if let check = chat.bundleCheck { Text(check).font(.caption) }
                }
                if let error = chat.error { Text(error).foregroundStyle(.red).font(.caption) }
            }
            .padding()
            .navigationTitle("qwen-edge")
            .onAppear { chat.scan() }
        }
    }
}

struct TurnView: View {
    let turn: Turn
    @State private var open = false

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Text(turn.question).bold()
            if !turn.reasoning.isEmpty {
                DisclosureGroup(isExpanded: $open) {
                    Text(turn.reasoning).italic().font(.caption)
                } label: {
                    Text(turn.cutByBudget ? "Reasoning (cut by the budget)" : "Reasoning").font(.caption)
                }
            }
            Text(turn.answer)
            ForEach(turn.toolCalls, id: \.self) { Text("tool call: \($0)").font(.caption) }
            Text(turn.stats).font(.caption2).foregroundStyle(.secondary)
        }
        .frame(maxWidth: .infinity, alignment: .leading)
    }
}
