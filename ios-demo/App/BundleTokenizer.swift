import Foundation
import Hub
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

    /// Reads the two files of a bundle that BundleVerifier has already checked (sizes and sha256).
    init(bundle: URL) throws {
        func config(_ name: String) throws -> Config {
            let data = try Data(contentsOf: bundle.appendingPathComponent(name))
            guard let object = try JSONSerialization.jsonObject(with: data) as? [NSString: Any] else {
                throw Unreadable(description: "\(name) is not a JSON object")
            }
            return Config(object)
        }
        tokenizer = try AutoTokenizer.from(tokenizerConfig: try config("tokenizer_config.json"),
                                           tokenizerData: try config("tokenizer.json"))
    }

    /// The ids of an already rendered chat prompt (the template adds every special token itself).
    func encode(_ text: String) -> [Int] { tokenizer.encode(text: text, addSpecialTokens: false) }

    func decode(_ ids: [Int]) -> String { tokenizer.decode(tokens: ids) }
}
