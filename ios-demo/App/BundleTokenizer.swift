import Foundation
import Hub
import QwenEdgeCore
import Tokenizers

/// The bundle's tokenizer, built from its tokenizer.json and tokenizer_config.json alone (swift-transformers 1.3.3:
/// AutoTokenizer.from(tokenizerConfig:tokenizerData:), the call its own LanguageModel makes). Bundles ship no
/// config.json, the model config that AutoTokenizer.from(modelFolder:) reads to guess a tokenizer class; the
/// class here comes from tokenizer_config.json's tokenizer_class. Kept in its own file because Tokenizers
/// exports a `Message` type that would shadow QwenEdgeCore's in the files that use the chat template.
struct BundleTokenizer: Sendable {
    struct Unreadable: Error, CustomStringConvertible {
        let description: String
    }

    private let tokenizer: any Tokenizer
    /// Every added token's text (<|im_start|>, <think>, <tool_call>, ...): what user text must not spell.
    let specialTokens: [String]

    /// Reads the two files of a bundle that BundleVerifier has already checked (sizes and sha256).
    init(bundle: URL) throws {
        func object(_ name: String) throws -> [NSString: Any] {
            let data = try Data(contentsOf: bundle.appendingPathComponent(name))
            guard let object = try JSONSerialization.jsonObject(with: data) as? [NSString: Any] else {
                throw Unreadable(description: "\(name) is not a JSON object")
            }
            return object
        }
        let tokenizerJSON = try object("tokenizer.json")
        specialTokens = (tokenizerJSON["added_tokens"] as? [[String: Any]] ?? []).compactMap { $0["content"] as? String }
        tokenizer = try AutoTokenizer.from(tokenizerConfig: Config(try object("tokenizer_config.json")),
                                           tokenizerData: Config(tokenizerJSON))
    }

    /// The ids of an already rendered chat prompt (the template adds every special token itself).
    func encode(_ text: String) -> [Int] { tokenizer.encode(text: text, addSpecialTokens: false) }

    /// A prompt rendered from ChatTemplate.userTextAsText's messages, encoded chunk by chunk, so only the template's
    /// own control tokens become special ids.
    func encodePrompt(_ rendered: String) -> [Int] {
        QwenEdgeCore.ChatTemplate.encodingChunks(rendered, specialTokens: specialTokens).flatMap { encode($0) }
    }

    func decode(_ ids: [Int]) -> String { tokenizer.decode(tokens: ids) }
}
