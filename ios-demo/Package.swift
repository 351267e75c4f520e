// swift-tools-version:6.0
// The iOS demo: QwenEdgeCore (manifest, verification, chat template, thinking budget, sampling, generation loop;
// no UI, no dependencies, tested with XCTest against the Python golden vectors and tests/golden/tamper.json:
// `swift test`, on Linux too), and the SwiftUI app in App/, built as an iOS app product when the package is
// opened in Xcode or Swift Playgrounds (AppleProductTypes).
//
// A manifest is evaluated on the host that builds it. The app, its product and its one dependency
// (swift-transformers, for the bundle's tokenizer.json) are declared only where AppleProductTypes exists,
// so `swift build` / `swift test` elsewhere (Linux, a macOS command line) resolve no package from the network.
import PackageDescription

#if canImport(AppleProductTypes)
import AppleProductTypes
#endif

var products: [Product] = [.library(name: "QwenEdgeCore", targets: ["QwenEdgeCore"])]
var dependencies: [Package.Dependency] = []
var targets: [Target] = [
    .target(name: "QwenEdgeCore", path: "Sources/QwenEdgeCore", resources: [.copy("manifest.schema.json")]),
    // Fixtures/ are read from the source tree (#filePath), as tests/golden is
    .testTarget(name: "QwenEdgeCoreTests", dependencies: ["QwenEdgeCore"], path: "Tests/QwenEdgeCoreTests",
                exclude: ["Fixtures"]),
]

#if canImport(AppleProductTypes)
products.append(.iOSApplication(
    name: "QwenEdge",
    targets: ["QwenEdgeApp"],
    bundleIdentifier: "dev.qwenedge.demo",
    teamIdentifier: "",
    displayVersion: "0.1.0",
    bundleVersion: "1",
    appIcon: .placeholder(icon: .chatMessage),
    accentColor: .presetColor(.teal),
    supportedDeviceFamilies: [.phone, .pad],
    supportedInterfaceOrientations: [.portrait]
))
// 1.x is the first line that exports the `Tokenizers` and `Hub` products (0.1.x exports only `Transformers`). The
// API App/BundleTokenizer.swift uses (AutoTokenizer.from(tokenizerConfig:tokenizerData:), Hub's Config([NSString:
// Any]), Tokenizer.encode(text:addSpecialTokens:) and decode(tokens:)) was read in the 1.3.3 sources, hence exact.
dependencies.append(.package(url: "https://github.com/huggingface/swift-transformers", exact: "1.3.3"))
targets.append(.executableTarget(
    name: "QwenEdgeApp",
    dependencies: ["QwenEdgeCore", .product(name: "Tokenizers", package: "swift-transformers"),
                   .product(name: "Hub", package: "swift-transformers")],
    path: "App",
    resources: [.copy("Bundles")]
))
#endif

let package = Package(
    name: "QwenEdge",
    platforms: [.iOS(.v18), .macOS(.v15)],
    products: products,
    dependencies: dependencies,
    targets: targets
)
